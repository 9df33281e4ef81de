//! ilert as a chaos run sees it: the stand-in on a fixed port, which a run can take away
//! (port closed: connection refused), turn to 503 for everything, and bring back. The
//! requests of every incarnation are kept, so a run counts across the outage.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use ilert_standin::{Behaviour, RateLimit, RecordedRequest, StandIn};

/// ilert's own limit, which the stand-in enforces like ilert: 50 per integration key per
/// minute. The agent runs with its default rate limits, so it should see no 429.
pub fn ilert_like() -> Behaviour {
    Behaviour {
        rate_limit: Some(RateLimit {
            per_key: 50,
            window_ms: 60_000,
        }),
        ..Behaviour::default()
    }
}

pub struct Ilert {
    addr: SocketAddr,
    behaviour: Behaviour,
    current: Option<StandIn>,
    earlier: Vec<RecordedRequest>,
}

impl Ilert {
    pub async fn start(behaviour: Behaviour) -> Result<Ilert> {
        let stand_in = StandIn::start_with("127.0.0.1:0".parse()?, behaviour.clone())
            .await
            .context("cannot start the ilert stand-in")?;
        Ok(Ilert {
            addr: stand_in.addr(),
            behaviour,
            current: Some(stand_in),
            earlier: Vec::new(),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes the port: the agent's connections are refused until [`Ilert::come_back`].
    pub async fn go_down(&mut self) {
        if let Some(stand_in) = self.current.take() {
            // Taken after the shutdown: a request answered while the server stopped
            // counts (taken before, its event went missing from the count although the
            // agent had its 202).
            self.earlier.extend(stand_in.shutdown().await);
        }
    }

    /// Listens on the same port again (retrying while the old socket lingers).
    pub async fn come_back(&mut self) -> Result<()> {
        if self.current.is_some() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..100 {
            match StandIn::start_with(self.addr, self.behaviour.clone()).await {
                Ok(stand_in) => {
                    self.current = Some(stand_in);
                    return Ok(());
                }
                Err(error) => last = Some(error),
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Err(anyhow::anyhow!(
            "the stand-in could not listen on {} again: {last:?}",
            self.addr
        ))
    }

    /// Every request answered 503 (`true`), or the normal behaviour again.
    pub fn fail_everything(&self, failing: bool) {
        if let Some(stand_in) = &self.current {
            let mut behaviour = self.behaviour.clone();
            if failing {
                behaviour.error_rate = 1.0;
            }
            stand_in.set_behaviour(behaviour);
        }
    }

    /// Every ilert request so far, over all incarnations, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        let mut all = self.earlier.clone();
        if let Some(stand_in) = &self.current {
            all.extend(stand_in.requests());
        }
        all
    }
}
