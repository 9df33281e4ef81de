//! `ilagent check --config FILE`: the file is read and checked as the daemon reads it
//! (flags, routes, expressions), then every `[[route.test]]` runs; one line per case, and
//! exit 0 only if all pass.

use super::Offline;
use crate::cli::{CheckArgs, GlobalArgs};
use crate::commands::Exit;
use crate::ilert::EventPath;
use crate::message::SourceKind;
use crate::routes::check;
use crate::routes::spec::SourceName;

pub(crate) fn run(global: &GlobalArgs, _args: CheckArgs) -> Exit {
    let offline = match Offline::load(global, "check") {
        Ok(offline) => offline,
        Err(error) => return error.into(),
    };
    let path = offline.file.located.path().display().to_string();
    let specs = offline.file.routes();
    let mut results = Vec::new();
    for source in [SourceName::Kafka, SourceName::Mqtt, SourceName::Http] {
        let kind = match source {
            SourceName::Kafka => SourceKind::Kafka,
            SourceName::Mqtt => SourceKind::Mqtt,
            SourceName::Http => SourceKind::Http,
        };
        let of_source: Vec<_> = specs
            .iter()
            .filter(|s| *s.source.get_ref() == source)
            .collect();
        let router = offline.router(kind);
        let path: Option<&EventPath> = offline.event_path.as_ref();
        results.extend(check::run(of_source.into_iter(), &router, path));
    }
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    for result in &results {
        match &result.failure {
            None => println!("ok    {}", result.label),
            Some(why) => println!("FAIL  {}: {why}", result.label),
        }
    }
    println!(
        "{path}: {} routes, {} tests, {} passed, {failed} failed",
        specs.len(),
        results.len(),
        results.len() - failed
    );
    if failed == 0 {
        Exit::Success
    } else {
        Exit::Rejected(format!("{failed} route tests failed"))
    }
}
