//! `/api/v1/rules`, in the shape of Prometheus's own endpoint.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::AppState;
use crate::exporter::RuleId;

fn rfc3339(unix: Option<f64>) -> String {
    let unix = unix.unwrap_or(0.0);
    chrono::DateTime::from_timestamp_millis((unix * 1000.0) as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

pub(super) async fn rules(State(state): State<AppState>) -> Json<Value> {
    let snapshot = state.exporter.load();
    let groups: Vec<Value> = snapshot
        .groups
        .iter()
        .map(|(key, info)| {
            let mut group_time = 0.0;
            let mut group_last: Option<f64> = None;
            let rules: Vec<Value> = info
                .rules
                .iter()
                .filter_map(|name| {
                    let entry = snapshot.rules.get(&RuleId { group: key.clone(), rule: name.clone() })?;
                    let s = &entry.status;
                    group_time += s.evaluation_seconds;
                    group_last = match (group_last, s.last_evaluation) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    };
                    let mut rule = json!({
                        "name": name,
                        "query": entry.expr,
                        "type": entry.kind,
                        "health": s.health.as_str(),
                        "evaluationTime": s.evaluation_seconds,
                        "lastEvaluation": rfc3339(s.last_evaluation),
                        "series": s.series,
                        "evaluations": s.evaluations,
                        "failures": s.failures,
                    });
                    if let Some(err) = &s.last_error {
                        rule["lastError"] = json!(err);
                    }
                    Some(rule)
                })
                .collect();
            json!({
                "name": key.name,
                "file": key.file.display().to_string(),
                "interval": info.interval,
                "rules": rules,
                "evaluationTime": group_time,
                "lastEvaluation": rfc3339(group_last),
            })
        })
        .collect();
    Json(json!({ "status": "success", "data": { "groups": groups } }))
}
