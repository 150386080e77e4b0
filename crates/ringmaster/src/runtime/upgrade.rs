//! The loop's side of a binary upgrade (`ringmaster upgrade`, SIGUSR2): the checks, the
//! export of the supervisor and of every descriptor to keep, the exec, and, in the new
//! image, the adoption of those descriptors without binding anything again.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;

use crate::upgrade::{self as handover, Handover, MasterInfo, PoolFds};

use super::*;

/// An upgrade checked and ready to exec.
pub(super) struct Prepared {
    path: PathBuf,
    state: OwnedFd,
    previous: OwnedFd,
    keep: Vec<RawFd>,
}

impl Runtime {
    /// What `status` says of the binary.
    pub fn master_info(&self) -> &MasterInfo {
        &self.master
    }

    /// Everything an upgrade needs, checked: refused (with why) during a reload, a stop or
    /// start-up, when the configuration on disk is not the running one, or when the new
    /// binary is missing or fails its self-test.
    pub(super) fn prepare_upgrade(&mut self, binary: Option<PathBuf>) -> Result<Prepared, String> {
        self.master.attempts += 1;
        let prepared = self.try_prepare(binary);
        if let Err(why) = &prepared {
            warn!("upgrade refused: {why}");
            self.master.last_error = Some(why.clone());
        }
        prepared
    }

    fn try_prepare(&mut self, binary: Option<PathBuf>) -> Result<Prepared, String> {
        if let Some(why) = self.sup.upgrade_blocker() {
            return Err(why);
        }
        if !self.daemon_pipes.is_empty() {
            return Err("a daemon has not said yet whether it is ready".into());
        }
        match self.launcher.dry_run() {
            Ok(config) if &config == self.sup.config() => {}
            Ok(_) => {
                return Err("the configuration on disk is not the running one: reload first".into())
            }
            Err(errors) => {
                return Err(format!(
                    "the configuration on disk is invalid: {}",
                    errors.first().map_or("", String::as_str)
                ))
            }
        }
        let path = binary.unwrap_or_else(|| self.master.binary.clone());
        handover::check_binary(&path)?;
        let previous = sys::upgrade::open_running_binary()
            .map_err(|e| format!("cannot keep the running binary open: {e}"))?;
        let state = self.export(&path);
        let keep = state.fds();
        let bytes = handover::encode(&state)?;
        let state = sys::upgrade::sealed_state(&bytes)
            .map_err(|e| format!("cannot write the state: {e}"))?;
        Ok(Prepared {
            path,
            state,
            previous,
            keep,
        })
    }

    fn export(&self, path: &std::path::Path) -> Handover {
        let mut listeners: Vec<&Rc<Listener>> = Vec::new();
        let mut pools = Vec::new();
        for (id, io) in &self.pools {
            let index = match listeners.iter().position(|l| Rc::ptr_eq(l, &io.listener)) {
                Some(i) => i,
                None => {
                    listeners.push(&io.listener);
                    listeners.len() - 1
                }
            };
            pools.push(PoolFds {
                service: id.service.0,
                family: id.family,
                listener: index,
                status_read: io.status_read.as_raw_fd(),
                status_write: io.status_write.as_raw_fd(),
            });
        }
        let mut master = self.master.clone();
        master.version = String::new();
        master.binary = path.to_path_buf();
        master.upgrades += 1;
        master.last_error = None;
        Handover {
            sup: self.sup.export_state(Instant::now()),
            listeners: listeners.iter().map(|l| l.fd.as_raw_fd()).collect(),
            pools,
            control: self
                .control
                .as_ref()
                .map(|c| (c.listener_fd().as_raw_fd(), c.path().to_path_buf())),
            master,
            previous: self.master.clone(),
        }
    }

    /// Replaces this image with the new binary; on return the exec failed, which is logged,
    /// and this image goes on.
    pub(super) fn exec_upgrade(&mut self, prepared: Prepared) {
        let Prepared {
            path,
            state,
            previous,
            keep,
        } = prepared;
        let mut all = keep;
        all.extend([state.as_raw_fd(), previous.as_raw_fd()]);
        let env = self.upgrade_env(state.as_raw_fd(), previous.as_raw_fd());
        let argv: Vec<OsString> = std::env::args_os().collect();
        let err = match handover::inherit_all(&all, true) {
            Ok(()) => {
                info!("upgrade: executing {}", path.display());
                self.observe.notifier.reloading();
                sys::upgrade::exec_path(&path, &argv, &env).to_string()
            }
            Err(e) => e,
        };
        let _ = handover::inherit_all(&all, false);
        error!(
            "upgrade: cannot execute {}: {err}; this binary goes on",
            path.display()
        );
        self.master.last_error = Some(format!("{}: {err}", path.display()));
        let status = self.sup.status();
        self.observe.notifier.reload_finished(&status);
    }

    fn upgrade_env(&self, state: RawFd, previous: RawFd) -> Vec<(OsString, OsString)> {
        let mut env: Vec<(OsString, OsString)> = std::env::vars_os()
            .filter(|(k, _)| k != handover::ENV_STATE && k != handover::ENV_PREVIOUS)
            .collect();
        env.push((handover::ENV_STATE.into(), state.to_string().into()));
        env.push((handover::ENV_PREVIOUS.into(), previous.to_string().into()));
        env
    }

    /// SIGUSR2: an upgrade to the binary at this one's path.
    pub(super) fn upgrade_on_signal(&mut self) {
        if let Ok(prepared) = self.prepare_upgrade(None) {
            self.exec_upgrade(prepared);
        }
    }

    /// In the new image: the descriptors of `state` taken over (every one checked open first,
    /// so that a failure leaves them all for a rollback), and the first actions carried out.
    pub fn adopt(
        &mut self,
        state: &Handover,
        actions: Vec<Action>,
        mut master: MasterInfo,
    ) -> Result<(), String> {
        for fd in state.fds() {
            if !sys::upgrade::is_open(fd) {
                return Err(format!("descriptor {fd} of the state is not open"));
            }
        }
        let mut listeners = Vec::new();
        for &fd in &state.listeners {
            let fd = sys::upgrade::adopt_fd(fd).map_err(|e| e.to_string())?;
            listeners.push(fd);
        }
        let listeners = self.adopt_listeners(state, listeners);
        for p in &state.pools {
            let read = sys::upgrade::adopt_fd(p.status_read).map_err(|e| e.to_string())?;
            let write = sys::upgrade::adopt_fd(p.status_write).map_err(|e| e.to_string())?;
            let pool = PoolId {
                service: ServiceKey(p.service),
                family: p.family,
            };
            let name = self.sup.pool_name(pool);
            match listeners.get(p.listener).and_then(Option::as_ref) {
                Some(listener) => {
                    self.insert_pool_io(&name, pool, listener.clone(), (read, write));
                }
                None => warn!("{name}: its listener was not handed over"),
            }
        }
        // Their pipes are read before their exits are fed, as for workers forked here.
        for w in &state.sup.workers {
            let pool = PoolId {
                service: ServiceKey(w.service),
                family: w.family,
            };
            self.worker_pools.insert(w.pid, pool);
        }
        if let Some((fd, path)) = &state.control {
            let fd = sys::upgrade::adopt_fd(*fd).map_err(|e| e.to_string())?;
            let listener = sys::control::ControlListener::adopt(fd, path)
                .map_err(|e| format!("control socket: {e}"))?;
            let server = crate::control::server::Server::new(
                listener,
                control::KIND_CONTROL << KIND_SHIFT,
                &self.poller,
            )
            .map_err(|e| format!("control socket: {e}"))?;
            self.control = Some(server);
        }
        master.version = crate::VERSION.to_string();
        self.master = master;
        self.adopted = true;
        for action in actions {
            self.carry_out(action);
        }
        let status = self.sup.status();
        self.observe.notifier.all_listening(&status);
        (self.on_ready)(status.all_listening);
        Ok(())
    }

    /// The handed-over listeners, each with where it is bound and the address it was
    /// configured with (that of the first pool using it).
    fn adopt_listeners(&self, state: &Handover, fds: Vec<OwnedFd>) -> Vec<Option<Rc<Listener>>> {
        fds.into_iter()
            .enumerate()
            .map(|(index, fd)| {
                let pool = state.pools.iter().find(|p| p.listener == index)?;
                let name = state
                    .sup
                    .services
                    .iter()
                    .find(|s| s.key == pool.service)?
                    .name
                    .clone();
                let spec = self.sup.config().services.iter().find(|s| s.name == name)?;
                let identity = sys::net::socket_identity(fd.as_fd()).ok();
                Some(Rc::new(Listener {
                    fd,
                    identity,
                    listen: spec.listen.clone(),
                }))
            })
            .collect()
    }
}
