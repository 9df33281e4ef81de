//! The three management calls behind escalation-policy updates (user search by email,
//! policy resolve by routing key, level replacement), guarded by a bearer API key like ilert's.

use std::collections::HashMap;

use axum::Json;
use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Bearer, RequestCtx, Route, reply};
use crate::model::{Behaviour, Level, Policy};
use crate::state::{LevelUpdateError, Shared};

pub(crate) fn handle(shared: &Shared, ctx: &RequestCtx, behaviour: &Behaviour) -> Response {
    if let Some(response) = check_auth(&ctx.bearer, behaviour.api_key.as_deref()) {
        return response;
    }
    match &ctx.route {
        Route::UserSearch => search_user(shared, ctx.json.as_ref()),
        Route::PolicyResolve => resolve(shared, ctx),
        Route::PolicyLevelUpdate { id, level } => {
            update_level(shared, id, level, ctx.json.as_ref())
        }
        _ => reply::error(StatusCode::NOT_FOUND, "No such endpoint", "NOT_FOUND"),
    }
}

fn unauthorized(message: &str) -> Option<Response> {
    Some(reply::error(
        StatusCode::UNAUTHORIZED,
        message,
        "UNAUTHORIZED",
    ))
}

fn check_auth(bearer: &Bearer, api_key: Option<&str>) -> Option<Response> {
    match bearer {
        Bearer::Missing => unauthorized("Missing Authorization: Bearer <API key>"),
        Bearer::Malformed => unauthorized("Authorization must be 'Bearer <API key>'"),
        Bearer::Doubled(_) => unauthorized("Authorization carries the 'Bearer' prefix twice"),
        Bearer::Token(token) => match api_key {
            Some(expected) if token != expected => unauthorized("Invalid API key"),
            _ => None,
        },
    }
}

fn bad_request(message: &str) -> Response {
    reply::error(StatusCode::BAD_REQUEST, message, "BAD_REQUEST")
}

fn not_found(message: &str) -> Response {
    reply::error(StatusCode::NOT_FOUND, message, "NOT_FOUND")
}

fn search_user(shared: &Shared, json: Option<&Value>) -> Response {
    let Some(email) = json.and_then(|j| j.get("email")).and_then(Value::as_str) else {
        return bad_request("Body must be {\"email\": \"...\"}");
    };
    match shared.find_user_by_email(email) {
        Some(user) => (
            StatusCode::OK,
            Json(json!({"id": user.id, "email": user.email})),
        )
            .into_response(),
        None => not_found("No user with this email"),
    }
}

fn resolve(shared: &Shared, ctx: &RequestCtx) -> Response {
    let Ok(Query(query)) = Query::<HashMap<String, String>>::try_from_uri(&ctx.uri) else {
        return bad_request("Malformed query string");
    };
    let Some(routing_key) = query.get("routing-key").filter(|k| !k.is_empty()) else {
        return bad_request("Query parameter routing-key is required");
    };
    match shared.policy_by_routing_key(routing_key) {
        Some(policy) => (StatusCode::OK, Json(policy_json(shared, &policy))).into_response(),
        None => not_found("No escalation policy with this routing key"),
    }
}

fn level_json(shared: &Shared, level: &Level) -> Value {
    let users: Vec<Value> = level
        .user_ids
        .iter()
        .map(|&id| match shared.user_email(id) {
            Some(email) => json!({"id": id, "email": email}),
            None => json!({"id": id}),
        })
        .collect();
    json!({"escalationTimeout": level.escalation_timeout, "users": users})
}

fn policy_json(shared: &Shared, policy: &Policy) -> Value {
    let rules: Vec<Value> = policy
        .levels
        .iter()
        .map(|l| level_json(shared, l))
        .collect();
    json!({
        "id": policy.id,
        "name": format!("Policy {}", policy.id),
        "routingKey": policy.routing_key,
        "repeating": false,
        "escalationRules": rules,
    })
}

/// Parses `{"escalationTimeout": N, "users": [{"id": N}, ...]}`.
fn parse_level(json: Option<&Value>) -> Option<Level> {
    let body = json?.as_object()?;
    let escalation_timeout = body.get("escalationTimeout")?.as_u64()?;
    let user_ids = body
        .get("users")?
        .as_array()?
        .iter()
        .map(|u| u.get("id").and_then(Value::as_i64))
        .collect::<Option<Vec<i64>>>()?;
    Some(Level {
        escalation_timeout,
        user_ids,
    })
}

fn update_level(shared: &Shared, id: &str, level: &str, json: Option<&Value>) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return not_found("No escalation policy with this id");
    };
    let Ok(index) = level.parse::<usize>() else {
        return bad_request("Level must be a zero-based number");
    };
    let Some(new_level) = parse_level(json) else {
        return bad_request("Body must be {\"escalationTimeout\": N, \"users\": [{\"id\": N}]}");
    };
    match shared.update_level(id, index, new_level) {
        Ok(level) => (StatusCode::OK, Json(level_json(shared, &level))).into_response(),
        Err(LevelUpdateError::UnknownPolicy) => not_found("No escalation policy with this id"),
        Err(LevelUpdateError::LevelOutOfRange { levels }) => bad_request(&format!(
            "Level {index} does not exist; the policy has {levels} levels"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_body_needs_timeout_and_user_ids() {
        let ok = json!({"escalationTimeout": 30, "users": [{"id": 7}]});
        assert_eq!(
            parse_level(Some(&ok)),
            Some(Level {
                escalation_timeout: 30,
                user_ids: vec![7]
            })
        );
        assert_eq!(parse_level(Some(&json!({"users": [{"id": 7}]}))), None);
        assert_eq!(
            parse_level(Some(&json!({"escalationTimeout": 30, "users": [{}]}))),
            None
        );
        assert_eq!(parse_level(None), None);
    }

    #[test]
    fn auth_requires_matching_bearer_token() {
        let token = Bearer::Token("k".into());
        assert!(check_auth(&token, None).is_none());
        assert!(check_auth(&token, Some("k")).is_none());
        assert!(check_auth(&token, Some("other")).is_some());
        assert!(check_auth(&Bearer::Missing, None).is_some());
        assert!(check_auth(&Bearer::Doubled("Bearer k".into()), None).is_some());
    }
}
