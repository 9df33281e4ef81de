//! HTTP control endpoints under `/__standin/`, so that benchmarks, scripts and the README demo
//! can configure and inspect a stand-in running in another process. They are not recorded.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

use crate::model::{Behaviour, Policy, RecordedRequest, Scripted, User};
use crate::state::Shared;

type Shr = State<Arc<Shared>>;

/// Accepts either one object or an array of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    Many(Vec<T>),
    One(T),
}

impl<T> OneOrMany<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            OneOrMany::Many(items) => items,
            OneOrMany::One(item) => vec![item],
        }
    }
}

pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/__standin/requests", get(list_requests).delete(clear))
        .route("/__standin/events", get(list_events))
        .route(
            "/__standin/behaviour",
            put(set_behaviour).get(get_behaviour),
        )
        .route("/__standin/script", post(add_script))
        .route("/__standin/users", post(add_users))
        .route("/__standin/policies", post(add_policies))
        .route("/__standin/policies/{id}", get(get_policy))
        .route("/__standin", any(not_found))
        .route("/__standin/{*rest}", any(not_found))
}

async fn list_requests(State(shared): Shr) -> Json<Vec<RecordedRequest>> {
    Json(shared.requests())
}

async fn clear(State(shared): Shr) -> StatusCode {
    shared.clear();
    StatusCode::NO_CONTENT
}

async fn list_events(State(shared): Shr) -> Json<Vec<serde_json::Value>> {
    Json(shared.events())
}

async fn get_behaviour(State(shared): Shr) -> Json<Behaviour> {
    Json(shared.behaviour())
}

async fn set_behaviour(State(shared): Shr, Json(behaviour): Json<Behaviour>) -> StatusCode {
    shared.set_behaviour(behaviour);
    StatusCode::NO_CONTENT
}

async fn add_script(State(shared): Shr, Json(entries): Json<OneOrMany<Scripted>>) -> StatusCode {
    shared.push_script(entries.into_vec());
    StatusCode::NO_CONTENT
}

async fn add_users(State(shared): Shr, Json(users): Json<OneOrMany<User>>) -> StatusCode {
    users
        .into_vec()
        .into_iter()
        .for_each(|u| shared.add_user(u));
    StatusCode::NO_CONTENT
}

async fn add_policies(State(shared): Shr, Json(policies): Json<OneOrMany<Policy>>) -> StatusCode {
    policies
        .into_vec()
        .into_iter()
        .for_each(|p| shared.add_policy(p));
    StatusCode::NO_CONTENT
}

async fn get_policy(State(shared): Shr, Path(id): Path<i64>) -> Response {
    match shared.policy(id) {
        Some(policy) => Json(policy).into_response(),
        None => not_found().await,
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such stand-in control endpoint\n").into_response()
}
