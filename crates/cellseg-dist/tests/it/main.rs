//! Integration tests of cellseg-dist: real Gloo groups of 2 processes on 127.0.0.1.
//!
//! Each test starts this binary again once per rank on one of its `#[ignore]`d `child_*` tests,
//! with torchrun's variables (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`) set; a child
//! prints `CHILD OK` when all its checks held. The parent asserts on the exit codes and outputs,
//! and on the time a failing group took to give up (never a hang: every wait has a timeout).

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cellseg_dist::{Error, GroupConfig, Launch, ProcessGroup, ReduceOp, Role};
use tch::{Kind, Tensor};

/// A free TCP port on 127.0.0.1 (bound, then released for the group to take).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// This binary on `child` with the variables of `rank` in a group of `world`.
fn spawn(child: &str, rank: usize, world: usize, port: u16, timeout_s: u32) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture", "--test-threads", "1"])
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("CELLSEG_DIST_TIMEOUT", timeout_s.to_string())
        .env("OMP_NUM_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The group of this child process (from the environment the parent set).
fn child_group() -> ProcessGroup {
    tch::set_num_threads(1);
    ProcessGroup::from_env().unwrap()
}

#[test]
fn two_processes_all_reduce_broadcast_barrier_and_gather() {
    let port = free_port();
    let children: Vec<Child> = (0..2).map(|r| spawn("child_collectives", r, 2, port, 60)).collect();
    for (rank, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        let t = text(&out);
        assert!(out.status.success() && t.contains("CHILD OK"), "rank {rank}:\n{t}");
    }
}

#[test]
#[ignore = "run by two_processes_all_reduce_broadcast_barrier_and_gather in a child process"]
fn child_collectives() {
    let g = child_group();
    assert_eq!(g.world_size(), 2);
    let r = g.rank() as f64;
    // Tensors of several shapes and two dtypes, one of them non-contiguous and one larger than
    // a bucket (25 MiB of float32 = 6.5 M values).
    let big = 7_000_000;
    let ts = [
        Tensor::full([3], r + 1.0, (Kind::Float, tch::Device::Cpu)),
        Tensor::full([2, 2], 10.0 * (r + 1.0), (Kind::Double, tch::Device::Cpu)),
        Tensor::full([4, 3], r, (Kind::Float, tch::Device::Cpu)).transpose(0, 1),
        Tensor::full([big], r + 2.0, (Kind::Float, tch::Device::Cpu)),
    ];
    g.all_reduce(&ts, ReduceOp::Sum).unwrap();
    assert_eq!(Vec::<f32>::try_from(&ts[0]).unwrap(), vec![3.0; 3]);
    assert_eq!(Vec::<f64>::try_from(ts[1].reshape([-1])).unwrap(), vec![30.0; 4]);
    assert_eq!(Vec::<f32>::try_from(ts[2].contiguous().reshape([-1])).unwrap(), vec![1.0; 12]);
    assert_eq!(ts[3].min().double_value(&[]), 5.0);
    assert_eq!(ts[3].max().double_value(&[]), 5.0);
    g.all_reduce(&ts[..2], ReduceOp::Mean).unwrap();
    assert_eq!(Vec::<f32>::try_from(&ts[0]).unwrap(), vec![3.0; 3]);
    // Each rank's own values, then rank 0's everywhere.
    let own = [Tensor::from_slice(&[r as f32, 7.0 + r as f32]), Tensor::from_slice(&[r as i64])];
    g.broadcast(&own, 0).unwrap();
    assert_eq!(Vec::<f32>::try_from(&own[0]).unwrap(), vec![0.0, 7.0]);
    assert_eq!(Vec::<i64>::try_from(&own[1]).unwrap(), vec![0]);
    g.barrier().unwrap();
    let gathered = g.all_gather_f64(&[r, 100.0 + r]).unwrap();
    assert_eq!(gathered, vec![vec![0.0, 100.0], vec![1.0, 101.0]]);
    // A mean of integers is refused before any communication, the same on both ranks.
    let e = g.all_reduce(&own[1..], ReduceOp::Mean).unwrap_err();
    assert!(matches!(e, Error::Tensor { .. }), "{e}");
    g.barrier().unwrap();
    println!("CHILD OK rank {}", g.rank());
}

/// A peer that never starts: rank 0 gives up after its timeout with an error naming the group,
/// it does not hang and does not abort.
#[test]
fn a_missing_peer_is_a_named_error_within_the_timeout() {
    let port = free_port();
    let t0 = Instant::now();
    let out = spawn("child_join_fails", 0, 2, port, 3).wait_with_output().unwrap();
    let took = t0.elapsed();
    let t = text(&out);
    assert!(out.status.success() && t.contains("CHILD OK"), "{t}");
    assert!(took < Duration::from_secs(30), "took {took:?}:\n{t}");
}

#[test]
#[ignore = "run by the tests of failures to join, in a child process"]
fn child_join_fails() {
    tch::set_num_threads(1);
    let e = ProcessGroup::from_env().unwrap_err();
    let msg = e.to_string();
    let (rank, world): (usize, usize) = (
        std::env::var("RANK").unwrap().parse().unwrap(),
        std::env::var("WORLD_SIZE").unwrap().parse().unwrap(),
    );
    assert!(matches!(e, Error::Init { rank: r, world: w, .. } if r == rank && w == world), "{msg}");
    assert!(msg.contains("127.0.0.1:"), "{msg}");
    println!("CHILD OK: {msg}");
}

/// Ranks started with different world sizes: the one that disagrees with rank 0 names both
/// sizes; rank 0 then gives up on the missing peer within the timeout.
#[test]
fn mismatched_world_sizes_are_named() {
    let port = free_port();
    let r0 = spawn("child_join_fails", 0, 2, port, 5);
    let r1 = spawn("child_join_fails", 1, 3, port, 5);
    let (o0, o1) = (r0.wait_with_output().unwrap(), r1.wait_with_output().unwrap());
    let (t0, t1) = (text(&o0), text(&o1));
    assert!(
        o1.status.success() && t1.contains("WORLD_SIZE=2") && t1.contains("WORLD_SIZE=3"),
        "{t1}"
    );
    assert!(o0.status.success() && t0.contains("CHILD OK"), "{t0}");
}

/// A port already taken by another program: rank 0 cannot serve the store, and says so.
#[test]
fn a_port_in_use_is_a_named_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = spawn("child_join_fails", 0, 2, port, 3).wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success() && t.contains("CHILD OK"), "{t}");
    drop(taken);
}

/// A rank killed in the middle of a run: the other one's next collective fails with an error
/// naming the operation and its rank, within the timeout.
#[test]
fn a_rank_that_dies_stops_the_other_within_the_timeout() {
    let port = free_port();
    let t0 = Instant::now();
    let survivor = spawn("child_survives_a_dead_peer", 0, 2, port, 10);
    let dying = spawn("child_dies", 1, 2, port, 10);
    let dead = dying.wait_with_output().unwrap();
    assert!(!dead.status.success(), "{}", text(&dead));
    let out = survivor.wait_with_output().unwrap();
    let t = text(&out);
    assert!(out.status.success() && t.contains("CHILD OK"), "{t}");
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}:\n{t}", t0.elapsed());
}

#[test]
#[ignore = "run by a_rank_that_dies_stops_the_other_within_the_timeout in a child process"]
fn child_dies() {
    let g = child_group();
    g.barrier().unwrap();
    std::process::exit(3); // as if killed between two steps
}

#[test]
#[ignore = "run by a_rank_that_dies_stops_the_other_within_the_timeout in a child process"]
fn child_survives_a_dead_peer() {
    let g = child_group();
    g.barrier().unwrap();
    let t = [Tensor::ones([1000], (Kind::Float, tch::Device::Cpu))];
    let mut last = None;
    // The peer exits right after the barrier; the first or a later collective notices.
    for _ in 0..50 {
        match g.all_reduce(&t, ReduceOp::Sum) {
            Ok(()) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                last = Some(e);
                break;
            }
        }
    }
    let e = last.expect("a collective with a dead peer fails");
    let msg = e.to_string();
    assert!(matches!(e, Error::Collective { op: "all_reduce", rank: 0, world: 2, .. }), "{msg}");
    println!("CHILD OK: {msg}");
}

#[test]
fn a_bad_environment_is_named() {
    // Only the parsing: a world of one, or none, makes no group at all.
    let cfg = GroupConfig::local(0, 1, free_port());
    assert_eq!(ProcessGroup::new(&cfg).unwrap().world_size(), 1);
    let cfg = GroupConfig { rank: 2, ..GroupConfig::local(0, 2, free_port()) };
    let e = ProcessGroup::new(&cfg).unwrap_err().to_string();
    assert!(e.contains("rank 2") && e.contains("world size"), "{e}");
}

/// The launcher starts one worker per local rank with torchrun's variables; they form a group.
#[test]
fn a_launcher_starts_its_workers_and_waits_for_them() {
    let launch = Launch { nproc_per_node: 2, master_port: free_port(), ..Launch::default() };
    assert!(matches!(launch.role().unwrap(), Role::Launcher));
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_path_buf();
    launch
        .run(
            |_| {
                let mut c = Command::new(std::env::current_exe().unwrap());
                c.args(["--exact", "child_launched", "--ignored", "--nocapture"])
                    .env("CELLSEG_DIST_TEST_OUT", &out);
                c
            },
            Duration::from_secs(30),
        )
        .unwrap();
    for rank in 0..2 {
        let t = std::fs::read_to_string(dir.path().join(format!("rank{rank}"))).unwrap();
        assert_eq!(t, format!("rank {rank} local {rank} of 2, threads {}", threads_each(2)));
    }
    // A worker that fails is named; the other is not left running.
    let t0 = Instant::now();
    let launch = Launch { nproc_per_node: 2, master_port: free_port(), ..Launch::default() };
    let e = launch
        .run(
            |local| {
                let mut c = Command::new(std::env::current_exe().unwrap());
                let child = if local == 1 { "child_dies" } else { "child_survives_a_dead_peer" };
                c.args(["--exact", child, "--ignored", "--nocapture"]).stderr(Stdio::null());
                c
            },
            Duration::from_secs(30),
        )
        .unwrap_err();
    assert!(matches!(e, Error::Launch { rank: 1, .. }), "{e}");
    assert!(e.to_string().starts_with("rank 1 exited with"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(60));
    // Layouts that cannot be are named.
    for (l, flag) in [
        (Launch { nproc_per_node: 0, ..Launch::default() }, "--nproc-per-node"),
        (Launch { nnodes: 2, node_rank: 2, ..Launch::default() }, "--node-rank"),
    ] {
        let e = l.run(|_| Command::new("true"), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(e, Error::Layout { flag: f, .. } if f == flag), "{e}");
    }
}

fn threads_each(n: usize) -> usize {
    (std::thread::available_parallelism().map_or(1, usize::from) / n).max(1)
}

#[test]
#[ignore = "run by a_launcher_starts_its_workers_and_waits_for_them in a child process"]
fn child_launched() {
    let Role::Worker(g) = Launch::default().role().unwrap() else { panic!("a launched worker") };
    g.barrier().unwrap();
    let threads = std::env::var("OMP_NUM_THREADS").unwrap();
    let out = std::path::PathBuf::from(std::env::var("CELLSEG_DIST_TEST_OUT").unwrap());
    std::fs::write(
        out.join(format!("rank{}", g.rank())),
        format!(
            "rank {} local {} of {}, threads {threads}",
            g.rank(),
            g.local_rank(),
            g.world_size()
        ),
    )
    .unwrap();
}
