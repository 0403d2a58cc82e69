//! What an attempt tells the dispatcher while it runs: its answer has come (its slot is free), then it
//! has ended (its delivery is let go).

use tokio::sync::mpsc;

/// What an attempt reports: that the upstream has answered (its slot is free), then that it has ended
/// (its result recorded, or not: the delivery is let go).
pub enum Progress {
    Answered {
        route: String,
    },
    /// With when it is due again (a retry), and whether its result was recorded.
    Finished {
        route: String,
        id: i64,
        resource_key: Option<String>,
        retry_at: Option<i64>,
        recorded: bool,
    },
}

impl Progress {
    pub fn route(&self) -> &str {
        match self {
            Progress::Answered { route } | Progress::Finished { route, .. } => route,
        }
    }
}

/// Reports an attempt's progress, and when dropped its end (and its answer, if it never came), so that a
/// panic never keeps a slot or a resource held.
pub struct FinishOnDrop {
    pub done: mpsc::UnboundedSender<Progress>,
    pub route: String,
    pub id: i64,
    pub resource_key: Option<String>,
    pub answered: bool,
    pub retry_at: Option<i64>,
    pub recorded: bool,
}

impl FinishOnDrop {
    pub fn answered(&mut self) {
        if !self.answered {
            self.answered = true;
            let _ = self.done.send(Progress::Answered { route: self.route.clone() });
        }
    }
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.answered();
        let (route, resource_key) = (std::mem::take(&mut self.route), self.resource_key.take());
        let (id, retry_at, recorded) = (self.id, self.retry_at, self.recorded);
        let _ = self.done.send(Progress::Finished { route, id, resource_key, retry_at, recorded });
    }
}
