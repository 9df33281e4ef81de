//! Unit tests of the store: per-key order, retries, dead letters, per-source hand-out.

use super::*;
use crate::message::SourceKind;
use crate::queue::record::{NewDeadLetter, Selection, now_ms};

fn row(key: Option<&str>, payload: &str) -> NewRow {
    NewRow {
        source: SourceKind::Mqtt,
        topic: "t".into(),
        payload: payload.as_bytes().to_vec(),
        meta: StoredMeta::default(),
        order_key: key.map(str::to_string),
        created_at_ms: 1,
    }
}

fn payloads(rows: &[QueuedRow]) -> Vec<String> {
    rows.iter()
        .map(|r| String::from_utf8(r.payload.clone()).unwrap())
        .collect()
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("q.db3")).unwrap();
    (dir, store)
}

#[test]
fn only_the_oldest_row_of_a_key_is_handed_out() {
    let (_dir, mut store) = store();
    store
        .insert(&[
            row(Some("a"), "a1"),
            row(Some("b"), "b1"),
            row(Some("a"), "a2"),
            row(None, "n1"),
            row(None, "n2"),
        ])
        .unwrap();
    let heads = store.fetch_heads(None, now_ms(), 10, &[]).unwrap();
    assert_eq!(payloads(&heads), ["a1", "b1", "n1", "n2"]);
    // a1 is being delivered: a2 still waits behind it.
    let others = store
        .fetch_heads(None, now_ms(), 10, &[heads[0].id])
        .unwrap();
    assert_eq!(payloads(&others), ["b1", "n1", "n2"]);
    store.delete(heads[0].id).unwrap();
    let next = store.fetch_heads(None, now_ms(), 10, &[]).unwrap();
    assert_eq!(payloads(&next), ["b1", "a2", "n1", "n2"]);
    // The same answer through the index, for the keys that just moved on.
    let keys = vec!["a".to_string(), "gone".to_string()];
    assert_eq!(
        payloads(&store.fetch_heads_of(None, now_ms(), &keys, &[]).unwrap()),
        ["a2"]
    );
    assert!(
        store
            .fetch_heads_of(None, now_ms(), &keys, &[next[1].id])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn each_source_takes_its_own_rows_and_the_key_order_holds_across_sources() {
    let (_dir, mut store) = store();
    let mut http = row(Some("a"), "h1");
    http.source = SourceKind::Http;
    store
        .insert(&[row(Some("a"), "m1"), http, row(Some("b"), "m2")])
        .unwrap();
    let http_heads = store.fetch_heads(Some(SourceKind::Http), now_ms(), 10, &[]);
    assert!(http_heads.unwrap().is_empty(), "h1 waits behind m1");
    let mqtt_heads = store.fetch_heads(Some(SourceKind::Mqtt), now_ms(), 10, &[]);
    let mqtt_heads = mqtt_heads.unwrap();
    assert_eq!(payloads(&mqtt_heads), ["m1", "m2"]);
    store.delete(mqtt_heads[0].id).unwrap();
    let http_heads = store.fetch_heads(Some(SourceKind::Http), now_ms(), 10, &[]);
    assert_eq!(payloads(&http_heads.unwrap()), ["h1"]);
    assert!(store.probe().is_ok());
}

#[test]
fn a_row_waiting_for_its_retry_holds_back_its_key_only() {
    let (_dir, mut store) = store();
    let ids = store
        .insert(&[
            row(Some("a"), "a1"),
            row(Some("a"), "a2"),
            row(Some("b"), "b1"),
        ])
        .unwrap();
    let later = now_ms() + 60_000;
    store.schedule_retry(ids[0], 3, later, "503").unwrap();
    assert_eq!(
        payloads(&store.fetch_heads(None, now_ms(), 10, &[]).unwrap()),
        ["b1"]
    );
    assert_eq!(store.next_retry_at(None, now_ms()).unwrap(), Some(later));
    let due = store.fetch_heads(None, later, 10, &[]).unwrap();
    assert_eq!(payloads(&due), ["a1", "b1"]);
    assert_eq!(due[0].attempts, 3);
    assert_eq!(due[0].last_error.as_deref(), Some("503"));
}

#[test]
fn dead_letters_keep_their_place_when_requeued_and_can_be_purged() {
    let (_dir, mut store) = store();
    let ids = store
        .insert(&[row(Some("a"), "a1"), row(Some("a"), "a2")])
        .unwrap();
    store
        .dead_letter_queued(ids[0], "exhausted", "gave up", 5)
        .unwrap();
    let letters = store.list_dead_letters(10).unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(
        (
            letters[0].queue_id,
            letters[0].kind.as_str(),
            letters[0].attempts
        ),
        (Some(ids[0]), "exhausted", 5)
    );
    assert_eq!(
        payloads(&store.fetch_heads(None, now_ms(), 10, &[]).unwrap()),
        ["a2"]
    );
    assert_eq!(store.requeue(&Selection::All).unwrap(), 1);
    let heads = store.fetch_heads(None, now_ms(), 10, &[]).unwrap();
    assert_eq!(payloads(&heads), ["a1"]);
    assert_eq!(heads[0].attempts, 0);
    assert_eq!(store.stats().unwrap().dead_letters, 0);

    store
        .add_dead_letter(&NewDeadLetter {
            queue_id: None,
            source: SourceKind::Mqtt,
            topic: "t".into(),
            payload: b"x".to_vec(),
            meta: StoredMeta::default(),
            order_key: None,
            kind: "invalid".into(),
            reason: "not JSON".into(),
            attempts: 0,
            created_at_ms: 1,
        })
        .unwrap();
    let id = store.list_dead_letters(10).unwrap()[0].id;
    assert_eq!(store.purge(&Selection::Ids(vec![id, 999])).unwrap(), 1);
    assert_eq!(
        store.stats().unwrap(),
        Stats {
            queued: 2,
            retrying: 0,
            dead_letters: 0,
            oldest_queued_at_ms: Some(1)
        }
    );
}

fn key(n: u8) -> [u8; 16] {
    [n; 16]
}

fn remember(store: &mut Store, key: [u8; 16], accepted_at_ms: i64, expires_at_ms: i64) {
    store
        .remember_all(&[AcceptedId {
            key,
            accepted_at_ms,
            expires_at_ms,
        }])
        .unwrap();
}

#[test]
fn an_accepted_id_counts_until_its_window_ends() {
    let (_dir, mut store) = store();
    remember(&mut store, key(1), 1_000, 5_000);
    assert_eq!(store.accepted_at(&key(1), 4_999).unwrap(), Some(1_000));
    assert_eq!(store.accepted_at(&key(1), 5_000).unwrap(), None);
    assert_eq!(store.accepted_at(&key(2), 2_000).unwrap(), None);
    // Accepted again later (after its window): the new window counts.
    remember(&mut store, key(1), 6_000, 9_000);
    assert_eq!(store.accepted_at(&key(1), 8_000).unwrap(), Some(6_000));
    assert_eq!(store.accepted_count().unwrap(), 1);
}

#[test]
fn pruning_deletes_expired_ids_then_those_nearest_their_end_beyond_the_cap() {
    let (_dir, mut store) = store();
    for n in 0..10u8 {
        // Ids 0..4 expire at 100..104, ids 5..9 at 10_005..10_009.
        let expires = if n < 5 { 100 } else { 10_000 } + i64::from(n);
        remember(&mut store, key(n), 0, expires);
    }
    let pruned = store.prune_accepted(1_000, 3).unwrap();
    assert_eq!(
        pruned,
        Pruned {
            expired: 5,
            evicted: 2,
            kept: 3
        }
    );
    let kept: Vec<bool> = (0..10)
        .map(|n| store.accepted_at(&key(n), 1_000).unwrap().is_some())
        .collect();
    assert_eq!(
        kept,
        [
            false, false, false, false, false, false, false, true, true, true
        ]
    );
}

#[test]
fn accepted_ids_leave_the_queue_and_its_stats_alone() {
    let (_dir, mut store) = store();
    store.insert(&[row(Some("a"), "a1")]).unwrap();
    remember(&mut store, key(7), 0, i64::MAX);
    let stats = store.stats().unwrap();
    assert_eq!((stats.queued, stats.dead_letters), (1, 0));
}

#[test]
fn ids_recorded_together_share_one_transaction_and_all_count() {
    let (_dir, mut store) = store();
    let ids: Vec<AcceptedId> = (0..3)
        .map(|n| AcceptedId {
            key: key(n),
            accepted_at_ms: 10,
            expires_at_ms: 100,
        })
        .collect();
    store.remember_all(&ids).unwrap();
    assert_eq!(store.accepted_count().unwrap(), 3);
    assert_eq!(store.accepted_at(&key(2), 50).unwrap(), Some(10));
}
