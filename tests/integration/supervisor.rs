//! `stackctl up` as a process supervisor: real processes, real signals.
//!
//! Services are `sh`/`python3` one-liners. Ordering is asserted on the order
//! of service lines on stackctl's stdout (one writer, so it is the order the
//! lines were read), and timing on timestamps the services print; nothing
//! waits a fixed time and then looks.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::harness::{free_port, poll, proc_environ, proc_state, Running, Stack};

const T: Duration = Duration::from_secs(15);

/// Index of the first stdout line containing `text`, failing with the log.
#[track_caller]
fn index_of(run: &Running, text: &str) -> usize {
    match run
        .lines()
        .iter()
        .filter(|l| l.stream == "out")
        .position(|l| l.text.contains(text))
    {
        Some(i) => i,
        None => run.fail(&format!("no stdout line contains {text:?}")),
    }
}

/// Assert the stdout lines containing `texts` appear in this order.
#[track_caller]
fn assert_order(run: &Running, texts: &[&str]) {
    let idx: Vec<usize> = texts.iter().map(|t| index_of(run, t)).collect();
    if idx.windows(2).any(|w| w[0] >= w[1]) {
        run.fail(&format!(
            "expected lines in order {texts:?}, got positions {idx:?}"
        ));
    }
}

/// The number printed after `word ` on the first line containing it.
#[track_caller]
fn number_after(run: &mut Running, word: &str) -> i32 {
    let line = run.wait_for(word, T);
    let n = line
        .text
        .split_once(word)
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    match n {
        Some(n) => n,
        None => run.fail(&format!("no number after {word:?} in {:?}", line.text)),
    }
}

/// Parent pid of `pid`, from /proc.
fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Live pids whose parent is `parent`, with their state letters.
fn children_of(parent: i32) -> Vec<(i32, char)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| ppid(p) == Some(parent))
        .filter_map(|p| Some((p, proc_state(p)?)))
        .collect()
}

fn gone(pid: i32) -> bool {
    !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn services_start_in_dependency_order_once_their_dependencies_are_ready() {
    let port = free_port();
    let yaml = r#"
version: 1
name: order
services:
  api:
    command: ["sh", "-c", "sleep 0.5; exec python3 -u -m http.server PORT --bind 127.0.0.1"]
    readiness: { http: "http://127.0.0.1:PORT/", interval: 100ms, timeout: 1s }
  logger:
    command: ["sh", "-c", "sleep 0.3; echo now listening; exec sleep 1000"]
    readiness: { log: "now listening" }
  migrate:
    command: ["sh", "-c", "echo migrating; sleep 0.2; echo migrated"]
    restart: on-failure
  tcpcheck:
    command: ["sh", "-c", "echo tcpcheck up; exec sleep 1000"]
    readiness: { tcp: "127.0.0.1:PORT", interval: 100ms }
  filer:
    command: ["sh", "-c", "sleep 0.2; echo flag written > flag; exec sleep 1000"]
    readiness: { file: flag, interval: 50ms }
  web:
    command: ["sh", "-c", "cat flag; echo web starting; exec sleep 1000"]
    depends_on:
      api: healthy
      logger: healthy
      migrate: completed_successfully
      tcpcheck: healthy
      filer: healthy
  solo:
    command: ["sh", "-c", "echo solo starting; exec sleep 1000"]
  off:
    command: ["sh", "-c", "echo off should never run"]
    enabled: "${NOT_SET_ANYWHERE}"
"#
    .replace("PORT", &port.to_string());
    let stack = Stack::new(&yaml).env_remove("NOT_SET_ANYWHERE");
    let mut run = stack.up();
    run.wait_for("web starting", T);
    // An independent service does not wait for anything.
    assert_order(&run, &["solo starting", "Serving HTTP"]);
    // web waited for each condition.
    assert_order(&run, &["\"GET / HTTP/1.1\" 200", "web starting"]);
    assert_order(&run, &["now listening", "web starting"]);
    assert_order(&run, &["migrated", "web starting"]);
    assert!(!run.has_line("off should never run"), "{}", run.log());
    // Lines are prefixed with the name, padded to the longest enabled name.
    assert!(run.has_line("web      | web starting"), "{}", run.log());
    assert!(run.has_line("web      | flag written"), "{}", run.log());
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
}

#[test]
fn a_dependency_that_can_never_complete_stops_the_stack_with_exit_1() {
    let stack = Stack::new(
        r#"
version: 1
name: never
services:
  migrate:
    command: ["sh", "-c", "echo migration failed; exit 4"]
    restart: "no"
  app:
    command: ["sh", "-c", "echo app should never run"]
    depends_on: { migrate: completed_successfully }
"#,
    );
    let mut run = stack.up();
    let status = run.wait_exit(T);
    assert_eq!(status.code(), Some(1), "{}", run.log());
    assert!(
        run.has_line("did not complete successfully (exited 4)"),
        "{}",
        run.log()
    );
    assert!(!run.has_line("app should never run"), "{}", run.log());
}

#[test]
fn a_crashing_service_restarts_with_growing_backoff() {
    let stack = Stack::new(
        r#"
version: 1
name: backoff
services:
  crash:
    command: ["sh", "-c", "echo tick $(date +%s.%N); exit 1"]
    restart: always
    backoff: { initial: 200ms, max: 10s }
    max_restarts: { count: 20, within: 1m }
"#,
    );
    let mut run = stack.up();
    let mut ticks = vec![];
    for n in 1..=4 {
        let line = run.wait_for_nth("crash | tick ", n, T);
        let t: f64 = line
            .text
            .rsplit(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| run.fail("bad tick"));
        ticks.push(t);
    }
    let gaps: Vec<f64> = ticks.windows(2).map(|w| w[1] - w[0]).collect();
    // Delays are 200 ms · 2^n minus at most 20 % jitter.
    assert!(
        gaps[0] >= 0.16,
        "first delay too short: {gaps:?}\n{}",
        run.log()
    );
    assert!(
        gaps[0] < gaps[1] && gaps[1] < gaps[2],
        "delays do not grow: {gaps:?}\n{}",
        run.log()
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
}

#[test]
fn a_service_that_keeps_failing_is_given_up_and_up_exits_1() {
    let stack = Stack::new(
        r#"
version: 1
name: giveup
services:
  flaky:
    command: ["sh", "-c", "echo boom; exit 1"]
    restart: always
    backoff: { initial: 50ms, max: 100ms }
    max_restarts: { count: 2, within: 1m }
  steady:
    command: ["sh", "-c", "echo steady; exec sleep 1000"]
"#,
    );
    let mut run = stack.up();
    run.wait_for("steady | steady", T);
    let status = run.wait_exit(T);
    assert_eq!(status.code(), Some(1), "{}", run.log());
    assert!(run.has_line("gave up on service"), "{}", run.log());
    assert!(
        run.has_line("stopping services reason=\"service `flaky` gave up\""),
        "{}",
        run.log()
    );
    let booms = run
        .lines()
        .iter()
        .filter(|l| l.text.contains("flaky  | boom"))
        .count();
    assert_eq!(booms, 3, "one start and two restarts\n{}", run.log());
    // The rest of the stack was stopped with it.
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

#[test]
fn an_optional_service_that_gives_up_leaves_the_stack_running() {
    let stack = Stack::new(
        r#"
version: 1
name: optional
services:
  extra:
    command: ["sh", "-c", "exit 2"]
    restart: always
    optional: true
    backoff: { initial: 50ms, max: 50ms }
    max_restarts: { count: 1, within: 1m }
  main:
    command: ["sh", "-c", "while :; do echo beat; sleep 0.1; done"]
"#,
    );
    let mut run = stack.up();
    run.wait_for("gave up on optional service", T);
    // Still running and still supervising: more heartbeats arrive.
    let beats = run
        .lines()
        .iter()
        .filter(|l| l.text.contains("main  | beat"))
        .count();
    run.wait_for_nth("main  | beat", beats + 3, T);
    assert!(
        run.child.try_wait().ok().flatten().is_none(),
        "{}",
        run.log()
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
}

#[test]
fn a_spawn_failure_names_the_service_and_the_program() {
    let stack = Stack::new(
        r#"
version: 1
name: spawnfail
services:
  ghost:
    command: no-such-program-xyz --flag
    restart: "no"
"#,
    );
    // Found before any service starts (issue 13, item 14): exit 2, the
    // manifest's services cannot run on this machine.
    let mut run = stack.up();
    let status = run.wait_exit(T);
    assert_eq!(status.code(), Some(2), "{}", run.log());
    assert!(
        run.has_line(
            "service `ghost` cannot start: program `no-such-program-xyz` not found in PATH"
        ),
        "{}",
        run.log()
    );
    assert!(!run.has_line("started service"), "{}", run.log());
}

#[test]
fn a_failing_liveness_probe_restarts_the_hung_service() {
    let stack = Stack::new(
        r#"
version: 1
name: liveness
services:
  hangs:
    # Healthy for half a second, then "hangs" (the probe file disappears).
    command: ["sh", "-c", "echo run; touch alive; sleep 0.5; rm -f alive; exec sleep 1000"]
    restart: always
    liveness: { exec: "test -f alive", interval: 100ms, timeout: 1s, failures: 2 }
    backoff: { initial: 100ms, max: 1s }
"#,
    );
    let mut run = stack.up();
    run.wait_for_nth("hangs | run", 2, T);
    assert!(run.has_line("liveness probe failed"), "{}", run.log());
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

/// Services `a` ← `b` ← `c` (`c` depends on `b`, `b` on `a`), declared out
/// of order, each printing `X up` and, on SIGTERM, `X stopping` after
/// `on_stop` (shell commands, `NAME` replaced by the service's name);
/// `extra` is appended to the manifest.
fn chain_of_three(name: &str, on_stop: &str, extra: &str) -> Stack {
    let svc = |name: &str, dep: Option<&str>| {
        let deps = dep
            .map(|d| format!("\n    depends_on: {{ {d}: healthy }}"))
            .unwrap_or_default();
        let on_stop = on_stop.replace("NAME", name);
        format!(
            "  {name}:\n    command: [\"sh\", \"-c\", \"trap 'echo {name} stopping; {on_stop} sleep 0.1; exit 0' TERM; echo {name} up; while :; do sleep 0.05; done\"]\n    readiness: {{ log: {name} up }}{deps}\n"
        )
    };
    // Declared out of order on purpose: the order comes from depends_on.
    let yaml = format!(
        "version: 1\nname: {name}\nservices:\n{}{}{}{extra}",
        svc("c", Some("b")),
        svc("a", None),
        svc("b", Some("a"))
    );
    Stack::new(&yaml)
}

#[test]
fn shutdown_stops_services_in_reverse_dependency_order() {
    let stack = chain_of_three("stoporder", "", "");
    let mut run = stack.up();
    run.wait_for("c | c up", T);
    assert_order(&run, &["a | a up", "b | b up", "c | c up"]);
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
    assert_order(
        &run,
        &["c | c stopping", "b | b stopping", "a | a stopping"],
    );
    // The stop's log line says what asked for it.
    assert!(
        run.has_line("stopping services reason=\"SIGTERM\""),
        "{}",
        run.log()
    );
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

/// The chain of three, up with the panic hook `point` and a 60 s budget,
/// then stopped by SIGTERM: it must exit 1 well before the budget is spent.
fn stopped_with_panic_hook(name: &str, point: &str) -> (Stack, Running) {
    let stack =
        chain_of_three(name, "", "shutdown_timeout: 60s\n").env("STACKCTL_TEST_PANIC", point);
    let mut run = stack.up();
    run.wait_for("c | c up", T);
    let sent = Instant::now();
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(1), "{}", run.log());
    assert!(sent.elapsed() < T, "{}", run.log());
    (stack, run)
}

/// A panic in a task the supervisor starts (a bug; injected by the
/// debug-only `STACKCTL_TEST_PANIC=group`: the process-group watcher of the
/// first service given its stop order panics on it) is reported with where
/// it happened, and the stop goes on in order: the order lost with the
/// watcher is given again, so the stop does not wait out the budget (60 s
/// here) to kill what no one watched.
#[test]
fn a_panicking_group_watcher_does_not_hold_the_stop_until_the_budget_is_spent() {
    let (_stack, run) = stopped_with_panic_hook("watcher", "group");
    assert!(
        run.has_line(
            "the process-group watcher of service `c` panicked at src/supervisor/group.rs:"
        ),
        "{}",
        run.log()
    );
    assert!(run.has_line("injected panic at `group`"), "{}", run.log());
    assert_order(
        &run,
        &["c | c stopping", "b | b stopping", "a | a stopping"],
    );
    assert!(!run.has_line("killing process group"), "{}", run.log());
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

/// A group watcher that panics again once replaced (debug-only
/// `STACKCTL_TEST_PANIC=group-always`: it panics on every stop order) has
/// no one left to watch its group: the group is killed at once, rather
/// than left running or waited for until the budget (60 s) is spent, and
/// the other services still stop in order.
#[test]
fn a_group_watcher_that_panics_twice_has_its_group_killed_at_once() {
    let (_stack, run) = stopped_with_panic_hook("watcher2", "group-always");
    assert!(
        run.has_line("no one can watch this process group: killing it"),
        "{}",
        run.log()
    );
    // Every watcher panics on its order, so every group is killed, in
    // the stop's order, and nothing is left behind.
    let killed: Vec<usize> = ["c", "b", "a"]
        .iter()
        .map(|s| {
            let text = format!("exited service={s} exit=killed by SIGKILL");
            (run.lines().iter().position(|l| l.text.contains(&text)))
                .unwrap_or_else(|| run.fail(&format!("no line contains {text:?}")))
        })
        .collect();
    assert!(killed.is_sorted(), "{killed:?}\n{}", run.log());
    assert!(!run.has_line("a | a stopping"), "{}", run.log());
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

/// A panic in the reaping task (a bug; injected by the debug-only
/// `STACKCTL_TEST_PANIC=reaper` right after it handed the first exit status
/// over, with its table locked) loses no status and stops no reaping: the
/// service that exited is reported with its own code, the stack stops in
/// reverse dependency order without waiting out the budget (the stopped
/// services are reaped, so their groups empty), and `up` exits 1 naming
/// where the reaper panicked.
#[test]
fn a_panicking_reaper_loses_no_exit_status_and_the_stack_stops_in_order() {
    let brief = "  d:\n    command: [\"sh\", \"-c\", \"echo d ran; exit 3\"]\n    restart: no\n    depends_on: { c: healthy }\n";
    let stack = chain_of_three(
        "reaperpanic",
        "",
        &format!("{brief}shutdown_timeout: 60s\n"),
    )
    .env("STACKCTL_TEST_PANIC", "reaper");
    let mut run = stack.up();
    let started = Instant::now();
    assert_eq!(run.wait_exit(T).code(), Some(1), "{}", run.log());
    assert!(started.elapsed() < T, "{}", run.log());
    assert!(
        run.has_line("the reaper panicked at src/supervisor/reaper.rs:"),
        "{}",
        run.log()
    );
    assert!(run.has_line("injected panic at `reaper`"), "{}", run.log());
    // The status handed over just before the panic reached the supervisor.
    assert!(
        run.has_line("exited service=d exit=exited 3"),
        "{}",
        run.log()
    );
    assert_order(
        &run,
        &[
            "d | d ran",
            "c | c stopping",
            "b | b stopping",
            "a | a stopping",
        ],
    );
    assert!(!run.has_line("killing process group"), "{}", run.log());
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

/// A panic in the supervisor (a bug; injected by the debug-only
/// `STACKCTL_TEST_PANIC=supervisor` once every service is ready) stops the
/// stack as SIGTERM does: the services get SIGTERM in reverse dependency
/// order, the final backup is pushed after they stopped (it holds what
/// their stop wrote), and `up` exits 1 with a line naming where it panicked.
#[test]
fn a_panic_in_the_supervisor_stops_the_services_in_order_and_takes_the_final_backup() {
    let persist = "persist:\n  remote: ./remote.git\n  workdir: ./work\n  paths: [./data]\n";
    let stack = chain_of_three("panicking", "echo NAME >> data/stopped.txt;", persist)
        .env("STACKCTL_TEST_PANIC", "supervisor");
    std::fs::create_dir_all(stack.path("data")).unwrap();
    crate::common_persist::init_bare(&stack.path("remote.git"));
    let mut run = stack.up();
    assert_eq!(run.wait_exit(T).code(), Some(1), "{}", run.log());
    assert!(
        run.has_line("the supervisor panicked at src/supervisor/run/mod.rs:"),
        "{}",
        run.log()
    );
    // The stop's log line names the panic, not a signal.
    assert!(
        run.has_line("stopping services reason=\"panic: the supervisor panicked at src/supervisor/run/mod.rs:"),
        "{}",
        run.log()
    );
    assert!(
        run.has_line("injected panic at `supervisor`"),
        "{}",
        run.log()
    );
    assert_order(&run, &["a | a up", "b | b up", "c | c up"]);
    assert_order(
        &run,
        &["c | c stopping", "b | b stopping", "a | a stopping"],
    );
    assert!(run.has_line("final backup pushed"), "{}", run.log());
    let data = stack.path("data/stopped.txt");
    let tree = data.display().to_string();
    let pushed = crate::common_persist::git(
        &stack.path("remote.git"),
        &["show", &format!("main:{}", tree.trim_start_matches('/'))],
    );
    assert_eq!(pushed, "c\nb\na", "{}", run.log());
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

#[test]
fn a_service_ignoring_sigterm_is_killed_after_its_stop_timeout() {
    let stack = Stack::new(
        r#"
version: 1
name: stubborn
services:
  stubborn:
    command: ["sh", "-c", "trap '' TERM; echo ignoring; while :; do sleep 0.05; done"]
    stop_timeout: 300ms
"#,
    );
    let mut run = stack.up();
    run.wait_for("stubborn | ignoring", T);
    let sent = Instant::now();
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "exited after {took:?}, before stop_timeout\n{}",
        run.log()
    );
    assert!(run.has_line("SIGKILL"), "{}", run.log());
    assert!(run.has_line("killed by SIGKILL"), "{}", run.log());
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

#[test]
fn a_second_signal_kills_everything_at_once() {
    let stack = Stack::new(
        r#"
version: 1
name: force
services:
  stubborn:
    command: ["sh", "-c", "trap '' TERM; echo ignoring; while :; do sleep 0.05; done"]
    stop_timeout: 60s
"#,
    );
    let mut run = stack.up();
    run.wait_for("stubborn | ignoring", T);
    run.signal(libc::SIGTERM);
    run.wait_for("stopping services", T);
    let sent = Instant::now();
    run.signal(libc::SIGTERM);
    run.wait_exit(Duration::from_secs(5));
    assert!(sent.elapsed() < Duration::from_secs(3), "{}", run.log());
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

/// The process-compose #520 lesson: the group is what must die.
#[test]
fn children_that_survive_their_leader_are_killed_with_the_group() {
    // A child that ignores SIGTERM, prints its pid, then creates the file
    // named by its argument (so its leader knows the handler is in place).
    let child = r#"python3 -c "import os,signal,sys,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('child', os.getpid(), flush=True); open(sys.argv[1], 'w').close(); time.sleep(1000)""#;
    let yaml = format!(
        r#"
version: 1
name: survivors
services:
  # Leader dies at once on SIGTERM; its child ignores it.
  parent:
    command: ["sh", "-c", "{c} parent.ready & wait"]
    stop_timeout: 300ms
  # Leader exits on its own once its child runs, leaving the child behind.
  quitter:
    command: ["sh", "-c", "{c} quitter.ready & while [ ! -f quitter.ready ]; do sleep 0.02; done; echo quitter leaving"]
    restart: "no"
    stop_timeout: 300ms
"#,
        c = child.replace('"', "\\\"")
    );
    let stack = Stack::new(&yaml);
    let mut run = stack.up();
    let parent_child = number_after(&mut run, "parent  | child");
    let quitter_child = number_after(&mut run, "quitter | child");
    run.wait_for("quitter leaving", T);
    // Without any shutdown, the leftover of `quitter` is stopped, then killed.
    poll(T, "the orphaned child of `quitter` to be killed", || {
        gone(quitter_child).then_some(())
    });
    assert!(
        run.has_line("leader exited but its process group lives on"),
        "{}",
        run.log()
    );
    assert!(!gone(parent_child), "{}", run.log());
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
    assert!(
        gone(parent_child),
        "child {parent_child} survived\n{}",
        run.log()
    );
    assert_eq!(run.marked_pids(), Vec::<i32>::new(), "{}", run.log());
}

#[test]
fn as_pid_1_in_a_pid_namespace_orphans_are_reaped_and_no_zombie_is_left() {
    if !can_unshare() {
        return;
    }
    let stack = Stack::new(
        r#"
version: 1
name: pid1
services:
  forker:
    # The subshell forks a background job and exits: the job is orphaned
    # and reparented to PID 1, which must reap it when it ends.
    command: ["sh", "-c", "(sleep 0.7 &); (sleep 0.71 &); echo forked; exec sleep 1000"]
"#,
    );
    let mut run = stack.spawn(
        &["up"],
        Some(&["unshare", "--pid", "--fork", "--mount-proc"]),
    );
    run.wait_for("forker | forked", T);
    let init = poll(T, "stackctl inside the namespace", || {
        children_of(run.pid()).first().map(|(p, _)| *p)
    });
    // PID 1 is the tiny forwarder (src/pid1.rs); its one child is the
    // stackctl that supervises and is the subreaper.
    let main = poll(T, "the supervising stackctl under PID 1", || {
        let kids = children_of(init);
        let cmd = |p: i32| std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
        match kids.as_slice() {
            [(p, _)] if String::from_utf8_lossy(&cmd(*p)).contains("stackctl") => Some(*p),
            _ => None,
        }
    });
    // Find the orphans while they run: reparented to stackctl.
    let orphans = poll(T, "the orphans to be reparented to stackctl", || {
        let o: Vec<i32> = children_of(main)
            .into_iter()
            .map(|(p, _)| p)
            .filter(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                cmd.starts_with(b"sleep\0") && !cmd.starts_with(b"sleep\x001000")
            })
            .collect();
        (o.len() == 2).then_some(o)
    });
    // They exit, and are reaped: gone from /proc, not left as zombies.
    for p in &orphans {
        poll(T, "the orphan to be reaped", || gone(*p).then_some(()));
    }
    let zombies: Vec<(i32, char)> = children_of(init)
        .into_iter()
        .chain(children_of(main))
        .filter(|(_, s)| *s == 'Z')
        .collect();
    assert!(zombies.is_empty(), "zombies: {zombies:?}\n{}", run.log());
    unsafe {
        libc::kill(init, libc::SIGTERM);
    }
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
}

#[test]
fn secrets_reach_only_the_services_that_name_them() {
    let stack = Stack::new(
        r#"
version: 1
name: secrets
env:
  TOKEN: { secret: true }
services:
  plain:
    command: ["sh", "-c", "echo pid $$$$; exec sleep 1000"]
  asks:
    command: ["sh", "-c", "echo pid $$$$; exec sleep 1000"]
    environment: [TOKEN]
"#,
    )
    .env("TOKEN", "s3cret-value");
    let mut run = stack.up();
    let plain = number_after(&mut run, "plain | pid");
    let asks = number_after(&mut run, "asks  | pid");
    let env_plain: BTreeSet<String> = proc_environ(plain).into_iter().collect();
    let env_asks: BTreeSet<String> = proc_environ(asks).into_iter().collect();
    assert!(!env_plain.is_empty(), "cannot read /proc/{plain}/environ");
    assert!(
        !env_plain
            .iter()
            .any(|kv| kv.starts_with("TOKEN=") || kv.contains("s3cret-value")),
        "secret leaked: {env_plain:?}"
    );
    assert!(env_asks.contains("TOKEN=s3cret-value"), "{env_asks:?}");
    assert!(!run.log().contains("s3cret-value"), "{}", run.log());
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
}

#[test]
fn json_logs_carry_service_and_stream_and_flush_partial_lines() {
    let stack = Stack::new(
        r#"
version: 1
name: json
services:
  talk:
    command: ["sh", "-c", "echo out-line; echo err-line >&2; printf partial-tail"]
    restart: "no"
"#,
    );
    let mut run = stack.spawn(&["--log-format", "json", "up"], None);
    run.wait_for("partial-tail", T);
    let objects: Vec<serde_json::Value> = run
        .lines()
        .iter()
        .filter(|l| l.stream == "out")
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l.text).ok())
        .filter(|v| v.get("service").is_some())
        .collect();
    let find = |line: &str| objects.iter().find(|o| o["line"] == line).cloned();
    let out = find("out-line").unwrap_or_else(|| run.fail("no JSON object for out-line"));
    assert_eq!(out["service"], "talk");
    assert_eq!(out["stream"], "stdout");
    assert!(
        out["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{out}"
    );
    let err = find("err-line").unwrap_or_else(|| run.fail("no JSON object for err-line"));
    assert_eq!(err["stream"], "stderr");
    assert!(find("partial-tail").is_some(), "{}", run.log());
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
}

#[test]
fn a_log_file_rotates_by_size_and_keeps_n_files() {
    let stack = Stack::new(
        r#"
version: 1
name: rotate
services:
  chatty:
    command: ["sh", "-c", "for i in $(seq 1 60); do echo line-$i-padding-padding; done; echo done"]
    restart: "no"
    logs: { file: logs/chatty.log, max_size: 200, keep: 2 }
"#,
    );
    let mut run = stack.up();
    run.wait_for("chatty | done", T);
    let live = stack.path("logs/chatty.log");
    poll(T, "the last line in the live log file", || {
        std::fs::read_to_string(&live)
            .ok()
            .filter(|s| s.ends_with("done\n"))
    });
    let one = std::fs::read_to_string(stack.path("logs/chatty.log.1")).unwrap_or_default();
    let two = std::fs::read_to_string(stack.path("logs/chatty.log.2")).unwrap_or_default();
    assert!(!one.is_empty() && !two.is_empty(), "rotated files missing");
    assert!(
        one.len() <= 200 && two.len() <= 200,
        "files exceed max_size"
    );
    assert!(
        !stack.path("logs/chatty.log.3").exists(),
        "kept more than 2"
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
}

#[test]
fn services_get_default_signals_and_no_inherited_descriptors() {
    let stack = Stack::new(
        r#"
version: 1
name: hygiene
services:
  probe:
    command: ["sh", "-c", "grep SigIgn /proc/self/status; echo fds $(ls /proc/self/fd | tr '\n' ' ')"]
    restart: "no"
"#,
    );
    // Started the way a script starts a background job under `nohup`:
    // signals ignored, and a stray descriptor (7) left open.
    let wrapper = [
        "sh",
        "-c",
        "trap '' INT QUIT HUP; exec 7</dev/null; exec \"$0\" \"$@\"",
    ];
    let mut run = stack.spawn(&["up"], Some(&wrapper));
    let ign = run.wait_for("probe | SigIgn:", T);
    let mask = ign
        .text
        .rsplit(char::is_whitespace)
        .next()
        .and_then(|h| u64::from_str_radix(h, 16).ok());
    // Signals 1-31; 32 and up are libc-internal and set up again by exec.
    assert_eq!(mask.map(|m| m & 0x7fff_ffff), Some(0), "{}", run.log());
    let fds = run.wait_for("probe | fds ", T);
    // 0-2 and the descriptor `ls` opens on /proc/self/fd (3).
    assert_eq!(
        fds.text.split_once("fds ").map(|(_, f)| f.trim()),
        Some("0 1 2 3"),
        "{}",
        run.log()
    );
    run.signal(libc::SIGTERM);
    assert_eq!(run.wait_exit(T).code(), Some(0), "{}", run.log());
}

#[test]
fn as_pid_1_the_exit_code_of_a_given_up_stack_comes_through() {
    if !can_unshare() {
        return;
    }
    let stack = Stack::new(
        r#"
services:
  broken:
    command: ["sh", "-c", "echo failing; exit 4"]
    restart: always
    max_restarts: 0
"#,
    );
    let mut run = stack.spawn(
        &["up"],
        Some(&["unshare", "--pid", "--fork", "--mount-proc"]),
    );
    assert_eq!(run.wait_exit(T).code(), Some(1), "{}", run.log());
}

/// Whether this machine can make a PID namespace (root and `unshare`);
/// says so when it cannot.
fn can_unshare() -> bool {
    let ok = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        // CI runs as root with util-linux: there a skip would hide a failure.
        super::harness::skip(
            "cannot create a PID namespace here (needs root and unshare from util-linux)",
        );
    }
    ok
}
