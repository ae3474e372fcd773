use std::sync::mpsc;
use std::time::Duration;

use super::*;
use crate::password::hash_password;

fn gauge() -> IntGauge {
    IntGauge::new("queued", "test").unwrap()
}

#[test]
fn zero_workers_means_one_fewer_than_the_cores_and_at_least_one() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    assert_eq!(PoolSize::new(0, 5).workers, (cores - 1).max(1));
    assert_eq!(
        PoolSize::new(3, 5),
        PoolSize {
            workers: 3,
            queue: 5
        }
    );
}

#[test]
fn admits_workers_plus_queue_then_refuses_and_frees_places_on_drop() {
    let pool = CheckPool::new(PoolSize {
        workers: 2,
        queue: 3,
    });
    let g = gauge();
    let places: Vec<Place> = (0..5).map(|_| pool.admit(&g).unwrap()).collect();
    assert_eq!(pool.admitted(), 5);
    assert_eq!(g.get(), 5);
    assert_eq!(pool.admit(&g).err(), Some(Busy));
    assert_eq!(pool.admitted(), 5, "a refusal takes no place");
    drop(places);
    assert_eq!((pool.admitted(), g.get()), (0, 0));
    assert!(pool.admit(&g).is_ok());
}

#[test]
fn queue_zero_admits_only_the_workers() {
    let pool = CheckPool::new(PoolSize {
        workers: 1,
        queue: 0,
    });
    let g = gauge();
    let held = pool.admit(&g).unwrap();
    assert_eq!(pool.admit(&g).err(), Some(Busy));
    drop(held);
    assert!(pool.admit(&g).is_ok());
}

/// A check holds its place until the blocking thread is done with it, even
/// when the session waiting for it goes away: the bound is on threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_waiter_leaves_its_running_check_counted_until_it_ends() {
    let pool = CheckPool::new(PoolSize {
        workers: 1,
        queue: 0,
    });
    let g = gauge();
    let hash = PasswordHash::Argon2(hash_password("pw").unwrap());
    let place = pool.admit(&g).unwrap();
    let (tx, rx) = mpsc::channel();
    let running = {
        let pool = pool.clone();
        let hash = hash.clone();
        tokio::spawn(async move {
            let ok = pool.check(place, hash, "pw".into()).await;
            let _ = tx.send(ok);
        })
    };
    // Wait until the check is on its blocking thread (the permit is taken).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while pool.permits.available_permits() != 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::task::yield_now().await;
    }
    running.abort();
    assert_eq!(pool.admit(&g).err(), Some(Busy), "still running");
    while pool.admitted() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the check never ended"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(rx.try_recv().is_err(), "the aborted waiter got no answer");
    // And checks give the right verdicts.
    let p = pool.admit(&g).unwrap();
    assert!(pool.check(p, hash.clone(), "pw".into()).await);
    let p = pool.admit(&g).unwrap();
    assert!(!pool.check(p, hash, "px".into()).await);
    assert_eq!(g.get(), 0);
}

#[test]
fn busy_delays_are_spread_between_one_and_two_delays() {
    let delays: Vec<Duration> = (0..200).map(|_| busy_delay()).collect();
    assert!(
        delays
            .iter()
            .all(|d| *d >= BUSY_DELAY && *d < 2 * BUSY_DELAY)
    );
    let (lo, hi) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
    assert!(*hi - *lo > BUSY_DELAY / 2, "spread {lo:?}..{hi:?}");
}
