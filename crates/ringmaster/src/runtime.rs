//! The loop: turns fds and signals into supervisor inputs and carries out its actions.
//!
//! Deliberately thin: every decision is the supervisor's. This file owns the descriptors
//! (signalfd, epoll, listeners, status pipes, daemon ready pipes) and the spawn plumbing.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use ringmaster_proto::{RawNote, NOTE_LEN};
use tracing::{debug, error, info, warn};

use ringmaster_core::{
    escape, readiness, Action, ChildFds, ExitStatus, Input, Listen, Now, PoolId, Proto,
    RateLimiter, Readiness, Role, ServiceKey, Sig, Supervisor, Verdict,
};

use crate::launch::Launcher;
use crate::sys;

mod control;
mod listeners;
mod observe;
mod upgrade;

const KIND_SHIFT: u64 = 56;
const KIND_SIGNAL: u64 = 1;
const KIND_LISTENER: u64 = 2;
const KIND_STATUS: u64 = 3;
const KIND_DAEMON: u64 = 4;

fn pool_token(kind: u64, pool: PoolId) -> u64 {
    kind << KIND_SHIFT | u64::from(pool.service.0) << 8 | u64::from(pool.family)
}

fn sig_of(signal: Sig) -> Signal {
    match signal {
        Sig::Hup => Signal::SIGHUP,
        Sig::Term => Signal::SIGTERM,
        Sig::Kill => Signal::SIGKILL,
    }
}

fn token_pool(token: u64) -> PoolId {
    PoolId {
        service: ServiceKey(((token >> 8) & 0xffff_ffff) as u32),
        family: (token & 0xff) as u8,
    }
}

/// One listening socket, shared between services while a reload hands it over.
struct Listener {
    fd: OwnedFd,
    /// Where it is bound; None only when the kernel would not say (never for our sockets).
    identity: Option<sys::net::SocketIdentity>,
    listen: Listen,
}

struct PoolIo {
    listener: Rc<Listener>,
    /// This pool's own descriptor of the listener, for epoll, when the socket is shared: two
    /// pools share one socket while a reload hands it over, and epoll takes one registration
    /// per descriptor. None: the pool that opened the socket watches the socket's own
    /// descriptor (one fd less per service: 5,000 services fit in 15,000). Always unwatched
    /// before it is closed (a closed duplicate would stay registered).
    watch_dup: Option<OwnedFd>,
    status_read: OwnedFd,
    status_write: OwnedFd,
    pending: Vec<u8>,
    watched: bool,
}

impl PoolIo {
    /// The descriptor this pool's listener watch is registered under.
    fn watch_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.watch_dup
            .as_ref()
            .map_or(self.listener.fd.as_fd(), |fd| fd.as_fd())
    }
}

struct DaemonPipe {
    name: String,
    read: OwnedFd,
    got: Vec<u8>,
}

/// Everything the loop owns.
pub struct Runtime {
    sup: Supervisor,
    launcher: Launcher,
    signals: sys::signals::SignalFd,
    poller: sys::poller::Poller,
    pools: HashMap<PoolId, PoolIo>,
    daemon_pipes: HashMap<u64, DaemonPipe>,
    next_daemon_token: u64,
    backlog: i32,
    exit_code: Option<i32>,
    /// Called with [`Action::Ready`]'s `all_listening`.
    on_ready: Box<dyn FnMut(bool)>,
    /// Log lines that signals and workers' bytes can provoke, bounded per source.
    log_limit: RateLimiter<LogSource>,
    /// Groups of the master's children, read once per batch of actions and only when one
    /// signals a group.
    child_groups: Option<HashSet<nix::unistd::Pid>>,
    /// Inputs not yet handled: answers to actions (spawned pids, bound sockets, loaded
    /// configs) wait here until every action of the input that asked for them is carried out.
    queue: VecDeque<Input>,
    /// The control socket, when there is one (runtime/control.rs).
    control: Option<crate::control::server::Server>,
    /// The last reload's report, for a `reload` request answered within its own feed.
    last_report: Option<ringmaster_core::ReloadReport>,
    /// systemd, the metrics endpoint, Cyrus's report file.
    observe: observe::Observers,
    /// The pool of each live worker, so that its pool's pipe is read before its exit is fed.
    worker_pools: HashMap<i32, PoolId>,
    /// This binary, and the upgrades this pid went through.
    master: crate::upgrade::MasterInfo,
    /// Started by an upgrade: the supervisor was adopted, not booted.
    adopted: bool,
}

/// Where a rate-limited log line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum LogSource {
    Signal(i32),
    StrayBytes(PoolId),
}

impl Runtime {
    pub fn new(
        sup: Supervisor,
        launcher: Launcher,
        signals: sys::signals::SignalFd,
        backlog: i32,
        on_ready: Box<dyn FnMut(bool)>,
    ) -> io::Result<Runtime> {
        let poller = sys::poller::Poller::new()?;
        poller.add(signals.fd(), KIND_SIGNAL << KIND_SHIFT)?;
        Ok(Runtime {
            sup,
            launcher,
            signals,
            poller,
            pools: HashMap::new(),
            daemon_pipes: HashMap::new(),
            next_daemon_token: 0,
            backlog,
            exit_code: None,
            on_ready,
            log_limit: RateLimiter::default(),
            child_groups: None,
            queue: VecDeque::new(),
            control: None,
            last_report: None,
            observe: observe::Observers::new(),
            worker_pools: HashMap::new(),
            master: crate::upgrade::MasterInfo::at_start(),
            adopted: false,
        })
    }

    fn now() -> Now {
        Now {
            mono: Instant::now(),
            unix: sys::clock::unix_now(),
        }
    }

    /// Runs until the supervisor says to exit; returns the exit status.
    pub fn run(mut self) -> i32 {
        // Children that ended before we looked (none, normally) are swept once.
        self.reap();
        if !self.adopted {
            self.feed(Input::Boot);
        }
        let mut tokens = Vec::new();
        while self.exit_code.is_none() {
            let deadline = [
                self.sup.next_deadline(),
                self.log_limit.next_report(),
                self.control_deadline(),
            ]
            .into_iter()
            .flatten()
            .min();
            let deadline = self.observe.earliest(deadline);
            let timeout = deadline.map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(err) = self.poller.wait(timeout, &mut tokens) {
                error!("epoll_wait failed: {err}");
                // Never spin: a broken poller gets a short pause before the next try.
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            // Notes first, so a worker's last words are counted before its exit is.
            tokens.sort_by_key(|t| match t >> KIND_SHIFT {
                KIND_STATUS | KIND_DAEMON => 0,
                KIND_LISTENER => 1,
                _ => 2,
            });
            for &token in &tokens {
                match token >> KIND_SHIFT {
                    KIND_STATUS => self.read_status(token_pool(token)),
                    KIND_DAEMON => self.read_daemon_pipe(token),
                    KIND_LISTENER => self.listener_readable(token_pool(token)),
                    KIND_SIGNAL => self.read_signals(),
                    control::KIND_CONTROL => self.control_ready(token),
                    _ => self.observe_token(token),
                }
                if self.exit_code.is_some() {
                    break;
                }
            }
            if self.exit_code.is_none() {
                self.feed(Input::Tick);
            }
            self.report_suppressed();
            self.control_tick();
            self.observe_timers();
        }
        self.exit_code.unwrap_or(0)
    }

    /// Handles `input` and everything it leads to, one input at a time: all the actions of
    /// one input are carried out before the next input (an answer to one of them, say) is
    /// handled, so the supervisor is never re-entered.
    fn feed(&mut self, input: Input) {
        self.queue.push_back(input);
        while let Some(input) = self.queue.pop_front() {
            if self.exit_code.is_some() {
                self.queue.clear();
                return;
            }
            self.observe_input(&input);
            let actions = self.sup.handle(input, Self::now());
            self.child_groups = None;
            for action in actions {
                self.carry_out(action);
            }
        }
    }

    /// An action's outcome, for the supervisor once the actions before it are carried out.
    fn answer(&mut self, input: Input) {
        self.queue.push_back(input);
    }

    fn listener_readable(&mut self, pool: PoolId) {
        let waiting = self
            .pools
            .get(&pool)
            .and_then(|io| sys::net::pending_connections(io.listener.fd.as_fd()))
            .unwrap_or(1);
        self.feed(Input::ListenerReadable { pool, waiting });
    }

    fn read_signals(&mut self) {
        let pending = match self.signals.read_pending() {
            Ok(p) => p,
            Err(err) => {
                warn!("reading signalfd: {err}");
                return;
            }
        };
        for received in pending {
            let Some(signal) = received.signal() else {
                self.ignore_signal(received);
                continue;
            };
            match signal {
                Signal::SIGCHLD => self.reap(),
                Signal::SIGHUP => {
                    self.note_signal(received, "reload requested");
                    self.feed(Input::ReloadRequested);
                }
                Signal::SIGTERM | Signal::SIGINT => {
                    self.note_signal(received, "stopping");
                    self.feed(Input::Stop { graceful: false });
                }
                Signal::SIGUSR1 => {
                    let what = if crate::logging::to_file() {
                        "reopening the log file"
                    } else {
                        "no log file to reopen (-L)"
                    };
                    self.note_signal(received, what);
                    crate::logging::reopen();
                }
                Signal::SIGUSR2 => {
                    self.note_signal(received, "upgrading the binary");
                    self.upgrade_on_signal();
                }
                Signal::SIGQUIT => {
                    self.note_signal(received, "stopping gracefully");
                    self.feed(Input::Stop { graceful: true });
                }
                _ => self.ignore_signal(received),
            }
        }
    }

    /// Says that a signal the master acts on arrived; a storm of them is counted, not logged
    /// line by line.
    fn note_signal(&mut self, received: sys::signals::Received, what: &str) {
        let source = LogSource::Signal(received.number);
        if let Verdict::Log { suppressed } = self.log_limit.check(&source, Instant::now()) {
            if suppressed > 0 {
                self.report(source, suppressed);
            }
            info!("{}: {what}", received.name());
        }
    }

    /// A signal the master does not act on: it was blocked so that it cannot kill or stop
    /// the master; say so (a storm of them is counted, not logged line by line).
    fn ignore_signal(&mut self, received: sys::signals::Received) {
        let source = LogSource::Signal(received.number);
        if let Verdict::Log { suppressed } = self.log_limit.check(&source, Instant::now()) {
            if suppressed > 0 {
                self.report(source, suppressed);
            }
            warn!(
                "ignoring {} from pid {} (uid {})",
                received.name(),
                received.pid,
                received.uid
            );
        }
    }

    fn report_suppressed(&mut self) {
        for (source, count) in self.log_limit.expired(Instant::now()) {
            self.report(source, count);
        }
    }

    fn report(&self, source: LogSource, count: u64) {
        match source {
            LogSource::Signal(number) => warn!(
                "suppressed {count} similar messages: ignored {}",
                sys::signals::signal_name(number)
            ),
            LogSource::StrayBytes(pool) => warn!(
                "{}: suppressed {count} similar messages (stray bytes on the status pipe)",
                self.sup.pool_name(pool)
            ),
        }
    }

    fn reap(&mut self) {
        let children = sys::process::reap_all();
        // A worker writes its notes before it exits, but they may have come in since its
        // pool's pipe was read: read them first, or a worker that served would be taken for
        // one that exited before serving (and a few of those throttle the pool).
        let mut pools: Vec<PoolId> = children
            .iter()
            .filter_map(|child| self.worker_pools.remove(&child.pid.as_raw()))
            .collect();
        pools.sort_unstable();
        pools.dedup();
        for pool in pools {
            self.read_status(pool);
        }
        for child in children {
            let status = match child.kind {
                sys::process::ExitKind::Exited(code) => ExitStatus::Code(code),
                sys::process::ExitKind::Signaled { signal, core } => {
                    ExitStatus::Signal { signal, core }
                }
            };
            self.feed(Input::Exited {
                pid: child.pid.as_raw(),
                status,
                pgid: child.pgid.map(|g| g.as_raw()),
                group_alive: child.group_alive,
            });
        }
    }

    fn read_status(&mut self, pool: PoolId) {
        let Some(io) = self.pools.get_mut(&pool) else {
            return;
        };
        match sys::pipe::read_notes(io.status_read.as_fd(), &mut io.pending) {
            Ok(_) => {}
            Err(err) => {
                warn!("reading status pipe: {err}");
                return;
            }
        }
        let whole = io.pending.len() / NOTE_LEN * NOTE_LEN;
        let notes: Vec<RawNote> = io.pending[..whole]
            .chunks_exact(NOTE_LEN)
            .filter_map(|c| <[u8; NOTE_LEN]>::try_from(c).ok())
            .map(RawNote::decode)
            .collect();
        io.pending.drain(..whole);
        if !io.pending.is_empty() {
            // Notes are written whole by one write(); a fragment means a broken writer.
            let stray = io.pending.len();
            io.pending.clear();
            let source = LogSource::StrayBytes(pool);
            if let Verdict::Log { suppressed } = self.log_limit.check(&source, Instant::now()) {
                if suppressed > 0 {
                    self.report(source, suppressed);
                }
                warn!(
                    "{}: status pipe: {stray} stray bytes (not a whole note); dropped",
                    self.sup.pool_name(pool)
                );
            }
        }
        if !notes.is_empty() {
            self.feed(Input::Notes { pool, notes });
        }
    }

    fn read_daemon_pipe(&mut self, token: u64) {
        let Some(pipe) = self.daemon_pipes.get_mut(&token) else {
            return;
        };
        let eof = match sys::pipe::read_notes(pipe.read.as_fd(), &mut pipe.got) {
            Ok(outcome) => outcome.eof,
            Err(err) => {
                warn!("reading daemon ready pipe: {err}");
                true
            }
        };
        let name = pipe.name.clone();
        let verdict = readiness(&pipe.got, eof);
        if verdict == Readiness::Waiting {
            return;
        }
        if let Some(pipe) = self.daemon_pipes.remove(&token) {
            let _ = self.poller.delete(pipe.read.as_fd());
        }
        match verdict {
            Readiness::Ready => self.feed(Input::DaemonReady { name }),
            Readiness::NotReady(reason) => self.feed(Input::DaemonNotReady { name, reason }),
            Readiness::Waiting => {}
        }
    }

    fn carry_out(&mut self, action: Action) {
        self.observe_action(&action);
        match action {
            Action::Bind {
                service,
                name,
                listen,
                proto,
                take_over,
            } => self.bind(service, &name, listen, proto, &take_over),
            Action::Spawn(request) => {
                let role = request.role.clone();
                let outcome = self.spawn(&request);
                match outcome {
                    Ok(pid) => {
                        if let Role::Worker { pool } = role {
                            self.worker_pools.insert(pid, pool);
                        }
                        self.answer(Input::Spawned { role, pid })
                    }
                    Err(error) => self.answer(Input::SpawnFailed { role, error }),
                }
            }
            Action::Signal { pid, signal } => {
                let signal = match signal {
                    Sig::Hup => Signal::SIGHUP,
                    Sig::Term => Signal::SIGTERM,
                    Sig::Kill => Signal::SIGKILL,
                };
                if let Err(err) = sys::process::send_signal(nix::unistd::Pid::from_raw(pid), signal)
                {
                    warn!("cannot send {signal} to {pid}: {err}");
                }
            }
            Action::SignalGroup { pgid, signal } => self.signal_group(pgid, signal),
            Action::SignalEscaped { signal, known } => {
                let known: std::collections::HashSet<i32> = known.into_iter().collect();
                for pid in sys::process::live_children() {
                    if !known.contains(&pid.as_raw()) {
                        let _ = sys::process::send_signal(pid, sig_of(signal));
                    }
                }
            }
            Action::Watch { pool, on } => self.watch(pool, on),
            Action::Pause { pool } => {
                if let Some(io) = self.pools.get(&pool) {
                    if let Err(err) = sys::net::pause_listener(io.listener.fd.as_fd()) {
                        warn!("cannot pause listener: {err}");
                    }
                }
            }
            Action::Resume { pool } => {
                if let Some(io) = self.pools.get(&pool) {
                    if let Err(err) =
                        sys::net::resume_listener(io.listener.fd.as_fd(), self.backlog)
                    {
                        error!("cannot resume listener: {err}");
                    }
                }
            }
            Action::Release { service, refuse } => self.release(service, refuse),
            Action::CleanupAfterCrash { pid } => self.launcher.cleanup_after_crash(pid),
            Action::LoadConfig => match self.launcher.reload() {
                Ok(config) => {
                    for line in crate::limits::fit(&config) {
                        warn!("reload: {line}");
                    }
                    self.answer(Input::ConfigLoaded(Box::new(config)))
                }
                Err(errors) => self.answer(Input::ConfigRejected { errors }),
            },
            // Logged by the supervisor; systemd is told in observe_action, the control socket
            // answers it here.
            Action::ReloadFinished(report) => self.control_reload_finished(report),
            Action::Ready { all_listening } => (self.on_ready)(all_listening),
            Action::Log(record) => crate::logging::print(&record),
            Action::Exit(code) => {
                self.kill_escaped();
                self.pools.clear();
                self.exit_code = Some(code);
            }
        }
    }

    /// Signals a group a worker left behind, only while one of our children is in it.
    fn signal_group(&mut self, pgid: i32, signal: Sig) {
        let signal = sig_of(signal);
        let raw = pgid;
        let pgid = nix::unistd::Pid::from_raw(pgid);
        // After a pid wrap the number may be an unrelated group: signal it only while
        // one of our children (which pins the number) is in it.
        let groups = self
            .child_groups
            .get_or_insert_with(sys::process::groups_of_children);
        if !groups.contains(&pgid) {
            debug!("process group {pgid} holds none of our children: not signalled");
            self.answer(Input::GroupGone { pgid: raw });
        } else if let Err(err) = sys::process::signal_group(pgid, signal) {
            warn!("cannot send {signal} to process group {pgid}: {err}");
        }
    }

    /// Every child the supervisor knew of is gone; what is left are processes that escaped
    /// their workers' groups (setsid) and came back to us as their subreaper. They would
    /// outlive the master: kill them.
    fn kill_escaped(&self) {
        let left = sys::process::live_children();
        for &pid in &left {
            let _ = sys::process::send_signal(pid, Signal::SIGKILL);
        }
        if !left.is_empty() {
            warn!(
                "killed {} process(es) that escaped from workers: {left:?}",
                left.len()
            );
        }
    }

    fn spawn(&mut self, request: &ringmaster_core::SpawnRequest) -> Result<i32, String> {
        let mut spec = self.launcher.exec_spec(request)?;
        let mut ready_read = None;
        match &request.fds {
            ChildFds::None => {}
            ChildFds::Worker(pool) => {
                let io = self
                    .pools
                    .get(pool)
                    .ok_or_else(|| "the service's sockets are gone".to_string())?;
                spec.status_fd = Some(io.status_write.as_raw_fd());
                spec.listen_fd = Some(io.listener.fd.as_raw_fd());
            }
            ChildFds::DaemonReadyPipe => {
                let (read, write) =
                    sys::pipe::status_pipe().map_err(|e| format!("cannot create a pipe: {e}"))?;
                spec.status_fd = Some(write.as_raw_fd());
                ready_read = Some((read, write));
            }
        }
        let pid = sys::spawn::spawn(&spec)
            .map_err(|e| format!("{}: {e}", escape(&request.argv.join(" "))))?;
        if let (Some((read, write)), Role::Daemon { name }) = (ready_read, &request.role) {
            drop(write);
            let token = KIND_DAEMON << KIND_SHIFT | self.next_daemon_token;
            self.next_daemon_token += 1;
            if let Err(err) = self.poller.add(read.as_fd(), token) {
                error!("cannot watch the ready pipe of {name}: {err}");
            }
            self.daemon_pipes.insert(
                token,
                DaemonPipe {
                    name: name.clone(),
                    read,
                    got: Vec::new(),
                },
            );
        }
        Ok(pid.as_raw())
    }
}
