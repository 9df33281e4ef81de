//! `ilagent map` and `ilagent check`: the daemon's route-and-map step run on messages
//! given by hand, with the mapping flags and routes of the configuration file, and no
//! network.

pub(crate) mod check;
pub(crate) mod map;

use std::sync::Arc;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::config::file::ConfigFile;
use crate::config::{self, Topics, UsageError};
use crate::ilert::EventPath;
use crate::mapping::MappingConfig;
use crate::message::SourceKind;
use crate::pipeline::MessageRouter;
use crate::routes::RouteTable;
use crate::sources::route::{Routes, TopicSyntax};

/// What the daemon would route and map with.
pub(crate) struct Offline {
    pub file: Arc<ConfigFile>,
    mapping: Arc<MappingConfig>,
    topics: Topics,
    routes: Arc<RouteTable>,
    pub event_path: Option<EventPath>,
    /// `--http_idempotency_window`, for the proxy's router.
    idempotency_window: std::time::Duration,
}

impl Offline {
    /// Reads the daemon flags the file (and the environment) set, and compiles the routes.
    pub(crate) fn load(global: &GlobalArgs, command: &str) -> Result<Offline, UsageError> {
        let Some(file) = global.config_file.clone() else {
            return Err(UsageError::new(format!(
                "ilagent {command} needs the configuration file: add --config FILE (or set ILAGENT_CONFIG)"
            )));
        };
        let argv = ["ilagent".into(), "daemon".into()]
            .into_iter()
            .chain(global.config_daemon_args.iter().cloned());
        let cli = <Cli as clap::Parser>::try_parse_from(argv).map_err(|e| {
            UsageError::new(format!("the configuration file's flags: {}", e.kind()))
        })?;
        let Command::Daemon(args) = cli.command else {
            return Err(UsageError::new(
                "the configuration file's flags do not parse",
            ));
        };
        let mapping = config::mapping_config(&args)?;
        let routes = Arc::new(config::route_table(global, &mapping)?);
        let topics = Topics {
            events: args.event_topics.clone(),
            heartbeats: args.heartbeat_topics.clone(),
            policies: args.policy_topics.clone(),
            routed: Vec::new(),
        };
        Ok(Offline {
            file,
            mapping: Arc::new(mapping),
            topics,
            routes,
            event_path: config::event_path_flag(&args)?,
            idempotency_window: args.queue_file.http_idempotency_window,
        })
    }

    /// The router of `source`, as that source builds it in the daemon.
    pub(crate) fn router(&self, source: SourceKind) -> MessageRouter {
        if source == SourceKind::Http {
            return crate::sources::http::router(Arc::clone(&self.routes), self.idempotency_window);
        }
        let (topics, syntax) = match source {
            SourceKind::Mqtt => (self.topics.clone(), TopicSyntax::Mqtt),
            _ => (self.topics.kafka_names(), TopicSyntax::Kafka),
        };
        let topics = Topics {
            routed: self.routes.topics_for(source),
            ..topics
        };
        MessageRouter::by_topic(Routes::new(&topics, syntax), Arc::clone(&self.mapping))
            .with_routes(Arc::clone(&self.routes))
    }

    pub(crate) fn routes(&self) -> &RouteTable {
        &self.routes
    }
}
