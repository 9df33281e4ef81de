//! Route tests (`[[route.test]]`), as `ilagent check` runs them: each case is a message
//! put through the whole route table (so it tests the routing as well as the fields), and
//! its preview compared with what the case expects.

use serde_json::Value;

use super::preview::{Decision, Preview, preview};
use super::spec::{Expectation, RouteSpec, SourceName, TestSpec};
use crate::ilert::EventPath;
use crate::message::{Message, Metadata, SourceKind};
use crate::pipeline::MessageRouter;

/// The route name a case expects when the flag mapping (the default route) takes it.
pub(crate) const FLAG_ROUTE: &str = "(flags)";

/// One case's result.
#[derive(Debug)]
pub(crate) struct CaseResult {
    pub label: String,
    /// `None`: passed.
    pub failure: Option<String>,
}

/// Runs every test of every route.
pub(crate) fn run<'a>(
    specs: impl Iterator<Item = &'a RouteSpec>,
    router: &MessageRouter,
    event_path: Option<&EventPath>,
) -> Vec<CaseResult> {
    let mut results = Vec::new();
    for spec in specs {
        let route = spec.name.get_ref().trim();
        for (index, case) in spec.test.iter().enumerate() {
            let label = match &case.name {
                Some(name) => format!("{route} / {name}"),
                None => format!("{route} / test {}", index + 1),
            };
            let failure = match message_of(spec, case) {
                Err(reason) => Some(reason),
                Ok(message) => {
                    let got = preview(router, &message, event_path);
                    compare(route, case.expect.get_ref(), &got)
                }
            };
            results.push(CaseResult { label, failure });
        }
    }
    results
}

fn message_of(spec: &RouteSpec, case: &TestSpec) -> Result<Message, String> {
    let source = match spec.source.get_ref() {
        SourceName::Kafka => SourceKind::Kafka,
        SourceName::Mqtt => SourceKind::Mqtt,
        SourceName::Http => SourceKind::Http,
    };
    let topic = match &case.topic {
        Some(topic) => topic.clone(),
        None => {
            let first = spec
                .topics
                .get_ref()
                .first()
                .map(|t| t.get_ref().clone())
                .unwrap_or_default();
            if first.contains(['+', '#']) {
                return Err(format!(
                    "the route's first topic `{first}` is a filter: give the case a `topic`"
                ));
            }
            first
        }
    };
    let payload = match (&case.value, &case.raw) {
        (Some(_), Some(_)) => return Err("give either `value` or `raw`, not both".into()),
        (Some(value), None) => {
            serde_json::to_vec(value).map_err(|e| format!("`value` has no JSON form: {e}"))?
        }
        (None, Some(raw)) => raw.clone().into_bytes(),
        (None, None) => return Err("the case needs a `value` (or `raw`) message".into()),
    };
    let mut meta = Metadata::new(source, topic);
    meta.key = case.key.clone();
    meta.headers = case
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into_bytes()))
        .collect();
    if source == SourceKind::Kafka {
        meta.partition = Some(0);
        meta.offset = Some(0);
    }
    Ok(Message { payload, meta })
}

/// `None` when `got` is what `expect` says; otherwise what differs.
fn compare(own_route: &str, expect: &Expectation, got: &Preview) -> Option<String> {
    let got_route = got.route.as_deref().unwrap_or(FLAG_ROUTE);
    let shown = || got.to_json().to_string();
    let wants_request = expect.method.is_some() || expect.path.is_some() || expect.body.is_some();
    let kinds = [
        wants_request,
        expect.policy_update.is_some(),
        expect.skip.is_some(),
        expect.invalid.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() != 1 {
        return Some(
            "`expect` must say one of: a request (method, path, body), `policy_update`, `skip`, or `invalid`".into(),
        );
    }
    // A skip may come from no route at all; anything else from the case's route unless
    // it names another.
    let route_wanted = match (&expect.route, &expect.skip) {
        (Some(route), _) => Some(route.as_str()),
        (None, Some(_)) => None,
        (None, None) => Some(own_route),
    };
    if let Some(route) = route_wanted
        && route != got_route
    {
        return Some(format!(
            "expected route `{route}`, got route `{got_route}`: {}",
            shown()
        ));
    }
    match (&got.decision, expect) {
        (
            Decision::Skip(reason),
            Expectation {
                skip: Some(part), ..
            },
        )
        | (
            Decision::Invalid(reason),
            Expectation {
                invalid: Some(part),
                ..
            },
        ) => (!reason.contains(part.as_str()))
            .then(|| format!("expected a reason containing `{part}`, got `{reason}`")),
        (
            Decision::Request {
                method, path, body, ..
            },
            _,
        ) if wants_request => {
            if let Some(want) = &expect.method
                && !want.eq_ignore_ascii_case(method)
            {
                return Some(format!("expected method {want}, got {method}"));
            }
            if let Some(want) = &expect.path
                && want != path
            {
                return Some(format!("expected path `{want}`, got `{}`", shown_path(got)));
            }
            if let Some(want) = &expect.dedupe {
                let got_id = got.dedupe.as_ref().map(|(id, _)| id.as_str());
                if got_id != Some(want.as_str()) {
                    return Some(format!(
                        "expected dedupe id `{want}`, got {}",
                        got_id.map_or("none".to_string(), |id| format!("`{id}`"))
                    ));
                }
            }
            if let Some(want) = &expect.body {
                let want: Value = match serde_json::to_value(want) {
                    Ok(v) => v,
                    Err(e) => return Some(format!("`body` has no JSON form: {e}")),
                };
                if body.as_ref() != Some(&want) {
                    return Some(format!("expected body {want}, got {}", shown()));
                }
            }
            None
        }
        (
            Decision::PolicyUpdate { .. },
            Expectation {
                policy_update: Some(want),
                ..
            },
        ) => {
            let want = match serde_json::to_value(want) {
                Ok(v) => v,
                Err(e) => return Some(format!("`policy_update` has no JSON form: {e}")),
            };
            let got_update = &got.to_json()["policy_update"];
            (*got_update != want)
                .then(|| format!("expected policy update {want}, got {got_update}"))
        }
        _ => Some(format!("expected {}, got {}", wanted(expect), shown())),
    }
}

fn shown_path(got: &Preview) -> String {
    got.to_json()["request"]["path"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wanted(expect: &Expectation) -> &'static str {
    if expect.policy_update.is_some() {
        "a policy update"
    } else if expect.skip.is_some() {
        "a skip"
    } else if expect.invalid.is_some() {
        "an invalid message"
    } else {
        "a request"
    }
}
