//! The listening sockets of the loop: binding a service's addresses (taking over the sockets
//! a reload retires), watching them for connections, and releasing them.

use ringmaster_core::handover::{self, SocketIdentity};

use super::*;

impl Runtime {
    pub(super) fn bind(
        &mut self,
        service: ServiceKey,
        name: &str,
        listen: Listen,
        proto: Proto,
        take_over: &[ServiceKey],
    ) {
        // Which of the retiring services' sockets this bind may take over, share a port with
        // or keep is the core's decision (`handover`); here are only the syscalls.
        let mut candidates: Vec<Rc<Listener>> = Vec::new();
        for (id, io) in &self.pools {
            if take_over.contains(&id.service)
                && !candidates.iter().any(|l| Rc::ptr_eq(l, &io.listener))
            {
                candidates.push(io.listener.clone());
            }
        }
        let retiring: Vec<Option<SocketIdentity>> =
            candidates.iter().map(|l| l.identity.clone()).collect();
        let planned = bind_or_take_over(name, &listen, proto, self.backlog, &candidates, &retiring);
        let planned = match planned {
            Ok(p) => p,
            Err(err) => {
                self.answer(Input::BindFailed {
                    service,
                    error: err.to_string(),
                });
                return;
            }
        };
        let mut listeners: Vec<(u8, Rc<Listener>)> = Vec::new();
        let mut taken = Vec::new();
        for p in planned {
            match p {
                sys::net::Planned::Bound(b) => {
                    info!("{name}: listening on {}", b.local);
                    let identity = sys::net::socket_identity(b.fd.as_fd()).ok();
                    listeners.push((
                        b.family_index,
                        Rc::new(Listener {
                            fd: b.fd,
                            identity,
                            listen: listen.clone(),
                        }),
                    ));
                }
                sys::net::Planned::Reused {
                    reused,
                    family_index,
                } => {
                    if let Some(l) = candidates.get(reused) {
                        if let Some(identity) = &l.identity {
                            info!(
                                "{name}: taking over the open socket on {}",
                                identity.address
                            );
                        }
                        taken.push(reused);
                        listeners.push((family_index, l.clone()));
                    }
                }
            }
        }
        keep_covered(name, &candidates, &retiring, &taken, &mut listeners);
        let mut families = Vec::new();
        for (family, listener) in listeners {
            let pool = PoolId { service, family };
            if self.add_pool_io(name, pool, listener) {
                families.push(family);
            }
        }
        if families.is_empty() {
            self.answer(Input::BindFailed {
                service,
                error: "no usable listening socket".into(),
            });
        } else {
            self.answer(Input::Bound { service, families });
        }
    }

    /// Opens a pool's status pipe and its own watch descriptor of `listener`; false (logged)
    /// when one cannot be had.
    fn add_pool_io(&mut self, name: &str, pool: PoolId, listener: Rc<Listener>) -> bool {
        let (status_read, status_write) = match sys::pipe::status_pipe() {
            Ok(pair) => pair,
            Err(err) => {
                error!("{name}: cannot create a status pipe: {err}");
                return false;
            }
        };
        self.insert_pool_io(name, pool, listener, (status_read, status_write))
    }

    /// A pool's descriptors, its status pipe given (new, or handed over by an upgrade).
    pub(super) fn insert_pool_io(
        &mut self,
        name: &str,
        pool: PoolId,
        listener: Rc<Listener>,
        (status_read, status_write): (OwnedFd, OwnedFd),
    ) -> bool {
        if let Err(err) = self
            .poller
            .add(status_read.as_fd(), pool_token(KIND_STATUS, pool))
        {
            error!("{name}: cannot watch the status pipe: {err}");
            return false;
        }
        // Shared: a retiring pool holds it too, and watches it under its own descriptor.
        let watch_dup = if Rc::strong_count(&listener) > 1 {
            match listener.fd.try_clone() {
                Ok(fd) => Some(fd),
                Err(err) => {
                    error!("{name}: cannot duplicate the listener: {err}");
                    let _ = self.poller.delete(status_read.as_fd());
                    return false;
                }
            }
        } else {
            None
        };
        self.pools.insert(
            pool,
            PoolIo {
                listener,
                watch_dup,
                status_read,
                status_write,
                pending: Vec::new(),
                watched: false,
            },
        );
        true
    }

    pub(super) fn watch(&mut self, pool: PoolId, on: bool) {
        let Some(io) = self.pools.get_mut(&pool) else {
            return;
        };
        if io.watched == on {
            return;
        }
        let result = if on {
            self.poller
                .add(io.watch_fd(), pool_token(KIND_LISTENER, pool))
        } else {
            self.poller.delete(io.watch_fd())
        };
        match result {
            Ok(()) => io.watched = on,
            Err(err) => warn!("cannot change the watch on a listener: {err}"),
        }
    }

    pub(super) fn release(&mut self, service: ServiceKey, refuse: bool) {
        let ids: Vec<PoolId> = self
            .pools
            .keys()
            .filter(|p| p.service == service)
            .copied()
            .collect();
        for id in ids {
            self.watch(id, false);
            let Some(io) = self.pools.remove(&id) else {
                continue;
            };
            let _ = self.poller.delete(io.status_read.as_fd());
            let others = self
                .pools
                .values()
                .filter(|other| !Rc::ptr_eq(&other.listener, &io.listener))
                .map(|other| other.listener.identity.as_ref());
            let overlapped = handover::overlapped(io.listener.identity.as_ref(), others);
            let still_used = Rc::strong_count(&io.listener) > 1;
            let plan = handover::release(still_used, refuse, overlapped);
            if plan.stop_listening {
                if let Err(err) = sys::net::pause_listener(io.listener.fd.as_fd()) {
                    debug!("stop listening: {err}");
                }
            }
            if plan.remove_path {
                if let Listen::Unix(path) = &io.listener.listen {
                    let _ = std::fs::remove_file(path);
                }
            }
            // The status pipe's read end goes with `io`; workers still writing get EPIPE,
            // which Cyrus's workers ignore.
        }
    }
}

/// Adds to `listeners` the retiring sockets the entry's new ones cover (the core decides
/// which), numbered after them.
fn keep_covered(
    name: &str,
    candidates: &[Rc<Listener>],
    retiring: &[Option<SocketIdentity>],
    taken: &[usize],
    listeners: &mut Vec<(u8, Rc<Listener>)>,
) {
    let serving: Vec<Option<SocketIdentity>> =
        listeners.iter().map(|(_, l)| l.identity.clone()).collect();
    let mut next_index = listeners.len();
    for i in handover::keep_covered(&serving, retiring, taken) {
        let Some(old) = candidates.get(i) else {
            continue;
        };
        if let Some(identity) = &old.identity {
            info!(
                "{name}: keeping the open socket on {}, which it covers",
                identity.address
            );
        }
        listeners.push((u8::try_from(next_index).unwrap_or(u8::MAX), old.clone()));
        next_index += 1;
    }
}

/// Binds the entry's addresses, taking over or sharing a port with the retiring sockets
/// (`candidates`, whose identities are `retiring`) as the core's `handover` says.
fn bind_or_take_over(
    name: &str,
    listen: &Listen,
    proto: Proto,
    backlog: i32,
    candidates: &[Rc<Listener>],
    retiring: &[Option<SocketIdentity>],
) -> io::Result<Vec<sys::net::Planned>> {
    sys::net::bind_listeners_reusing(
        listen,
        proto,
        backlog,
        |identity| handover::take_over(identity, retiring),
        |identity| {
            let sharers = handover::port_sharers(identity, retiring);
            for &i in &sharers {
                let Some(l) = candidates.get(i) else { continue };
                if let Err(err) = sys::net::allow_port_sharing(l.fd.as_fd()) {
                    warn!(
                        "{name}: cannot share the port of {}: {err}",
                        identity.address
                    );
                }
            }
            !sharers.is_empty()
        },
    )
}
