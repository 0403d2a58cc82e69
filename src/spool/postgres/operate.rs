//! What an operator changes in the PostgreSQL spool (`hookgate spool replay|retry|drop`, `replay
//! --unrouted`, `migrate --from`), safely while replicas deliver from it: each change takes the advisory
//! locks of the resources it touches, as the replicas' writers do, and sets their head marks again.

use tokio_postgres::{Client, GenericClient, Transaction};

use super::write::{
    DELIVERY_ROW_BYTES, EVENT_BYTES_SQL, count_usage, insert_deliveries, lock_all, recompute_head, resource_lock,
};
use super::{SpoolError, pg_error};
use crate::route::{Routes, TopicPattern};
use crate::spool::store::Routed;

/// The (route, resource) pairs of the deliveries `filter` selects (its parameters are `params`).
async fn resources_of(
    tx: &Transaction<'_>,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<(String, String)>, SpoolError> {
    let rows = tx
        .query(
            &format!("SELECT DISTINCT route, resource_key FROM deliveries WHERE resource_key IS NOT NULL AND {filter}"),
            params,
        )
        .await
        .map_err(pg_error)?;
    Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
}

/// Locks the resources, then sets each one's head mark from scratch.
async fn lock_resources(tx: &Transaction<'_>, resources: &[(String, String)]) -> Result<(), SpoolError> {
    let mut keys: Vec<i64> = resources.iter().map(|(route, resource)| resource_lock(route, resource)).collect();
    lock_all(tx, &mut keys).await
}

async fn recompute(tx: &Transaction<'_>, resources: &[(String, String)]) -> Result<(), SpoolError> {
    for (route, resource) in resources {
        recompute_head(tx, route, resource).await?;
    }
    Ok(())
}

/// Makes dead (or delivered) deliveries pending again, due at `now`, with a fresh give-up clock: one
/// event's (by public id) not already pending, or every dead letter (of `route`, when given).
pub async fn replay(
    client: &mut Client,
    public_id: Option<&str>,
    route: Option<&str>,
    now: i64,
) -> Result<usize, SpoolError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let (filter, params): (&str, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>) = match &public_id {
        Some(id) => (
            "state <> 'pending' AND ($2::text IS NULL OR route = $2) AND event_id = (SELECT id FROM events WHERE public_id = $1)",
            vec![id, &route],
        ),
        None => ("state = 'dead' AND ($1::text IS NULL OR route = $1)", vec![&route]),
    };
    let mut resources = resources_of(&tx, filter, &params).await?;
    lock_resources(&tx, &resources).await?;
    let now_index = params.len() + 1;
    let mut with_now = params.clone();
    with_now.push(&now);
    let replayed = tx
        .query(
            &format!(
                "UPDATE deliveries SET state = 'pending', is_head = (resource_key IS NULL), pending_since = ${now_index},
                 next_attempt_at = ${now_index}, finished_at = NULL, lease_owner = NULL, lease_until = NULL WHERE {filter}
                 RETURNING route, resource_key"
            ),
            &with_now,
        )
        .await
        .map_err(pg_error)?;
    // A delivery a replica finished between the read above and the update (a new dead letter) is replayed
    // too: its resource is locked now, before the head marks are set again.
    let late: Vec<(String, String)> = replayed
        .iter()
        .filter_map(|row| Some((row.get::<_, String>(0), row.get::<_, Option<String>>(1)?)))
        .filter(|resource| !resources.contains(resource))
        .collect();
    lock_resources(&tx, &late).await?;
    resources.extend(late);
    resources.sort();
    resources.dedup();
    let changed = replayed.len();
    recompute(&tx, &resources).await?;
    tx.execute("SELECT pg_notify('hookgate_pending', '')", &[]).await.map_err(pg_error)?;
    tx.commit().await.map_err(pg_error)?;
    Ok(changed)
}

/// Makes the pending deliveries waiting for a retry due at `now`: one event's, one route's, or every one.
pub async fn retry_now(
    client: &Client,
    public_id: Option<&str>,
    route: Option<&str>,
    now: i64,
) -> Result<usize, SpoolError> {
    let changed = client
        .execute(
            "UPDATE deliveries SET next_attempt_at = $3
             WHERE state = 'pending' AND next_attempt_at > $3
               AND ($1::text IS NULL OR event_id = (SELECT id FROM events WHERE public_id = $1))
               AND ($2::text IS NULL OR route = $2)",
            &[&public_id, &route, &now],
        )
        .await
        .map_err(pg_error)?;
    client.execute("SELECT pg_notify('hookgate_pending', '')", &[]).await.map_err(pg_error)?;
    Ok(usize::try_from(changed).unwrap_or(usize::MAX))
}

/// Deletes an event and all its deliveries, with the head marks it implies. Returns whether it existed.
pub async fn drop_event(client: &mut Client, public_id: &str) -> Result<bool, SpoolError> {
    let tx = client.transaction().await.map_err(pg_error)?;
    let filter = "event_id = (SELECT id FROM events WHERE public_id = $1)";
    let resources = resources_of(&tx, filter, &[&public_id]).await?;
    lock_resources(&tx, &resources).await?;
    let deliveries: i64 = tx
        .query_one(&format!("SELECT COUNT(*) FROM deliveries WHERE {filter}"), &[&public_id])
        .await
        .map_err(pg_error)?
        .get(0);
    let gone = tx
        .query_opt(&format!("DELETE FROM events WHERE public_id = $1 RETURNING {EVENT_BYTES_SQL}"), &[&public_id])
        .await
        .map_err(pg_error)?;
    let dropped = gone.is_some();
    if let Some(row) = gone {
        count_usage(&tx, "operator", -(row.get::<_, i64>(0) + deliveries * DELIVERY_ROW_BYTES)).await?;
    }
    recompute(&tx, &resources).await?;
    tx.commit().await.map_err(pg_error)?;
    Ok(dropped)
}

/// Routes the unrouted events (the one with `public_id`, or every one, of topics `topic` matches) along
/// `routes`, due at `now`, as `store::route_unrouted` does on SQLite: each event once, however many
/// replays run at once.
pub async fn route_unrouted(
    client: &mut Client,
    routes: &Routes,
    public_id: Option<&str>,
    topic: Option<&TopicPattern>,
    now: i64,
) -> Result<Routed, SpoolError> {
    let candidates = client
        .query(
            "SELECT id, source, topic, resource_key FROM events WHERE unrouted AND ($1::text IS NULL OR public_id = $1) ORDER BY id",
            &[&public_id],
        )
        .await
        .map_err(pg_error)?;
    let mut routed = Routed::default();
    for event in candidates.iter().filter(|row| topic.is_none_or(|t| t.matches(row.get::<_, &str>(2)))) {
        let (id, source, topic, resource): (i64, &str, &str, Option<String>) =
            (event.get(0), event.get(1), event.get(2), event.get(3));
        let names: Vec<String> = routes.matching(source, topic).map(|r| r.name.clone()).collect();
        if names.is_empty() {
            match routed.still_unrouted.iter_mut().find(|(t, _)| t == topic) {
                Some((_, count)) => *count += 1,
                None => routed.still_unrouted.push((topic.to_owned(), 1)),
            }
            continue;
        }
        let tx = client.transaction().await.map_err(pg_error)?;
        let mut keys: Vec<i64> =
            resource.iter().flat_map(|r| names.iter().map(move |route| resource_lock(route, r))).collect();
        lock_all(&tx, &mut keys).await?;
        if tx
            .execute("UPDATE events SET unrouted = false WHERE id = $1 AND unrouted", &[&id])
            .await
            .map_err(pg_error)?
            == 0
        {
            continue;
        }
        insert_deliveries(&tx, id, resource.as_deref(), &names, now).await?;
        count_usage(&tx, "operator", i64::try_from(names.len()).unwrap_or(0) * DELIVERY_ROW_BYTES).await?;
        tx.execute("SELECT pg_notify('hookgate_pending', '')", &[]).await.map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        routed.events += 1;
        routed.deliveries += names.len();
    }
    Ok(routed)
}

/// The schema version and the tables' size, for `spool stats`.
pub async fn describe(client: &impl GenericClient) -> Result<(i32, u64), SpoolError> {
    Ok((super::schema::schema_version(client).await?, super::inspect::used_bytes(client).await?))
}
