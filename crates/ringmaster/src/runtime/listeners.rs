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
        let planned = sys::net::bind_listeners_reusing(
            &listen,
            proto,
            self.backlog,
            |identity| handover::take_over(identity, &retiring),
            |identity| {
                let sharers = handover::port_sharers(identity, &retiring);
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
        );
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
        let serving: Vec<Option<SocketIdentity>> =
            listeners.iter().map(|(_, l)| l.identity.clone()).collect();
        let mut next_index = listeners.len();
        for i in handover::keep_covered(&serving, &retiring, &taken) {
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
        let mut families = Vec::new();
        for (family, listener) in listeners {
            let pool = PoolId { service, family };
            let (status_read, status_write) = match sys::pipe::status_pipe() {
                Ok(pair) => pair,
                Err(err) => {
                    error!("{name}: cannot create a status pipe: {err}");
                    continue;
                }
            };
            if let Err(err) = self
                .poller
                .add(status_read.as_fd(), pool_token(KIND_STATUS, pool))
            {
                error!("{name}: cannot watch the status pipe: {err}");
                continue;
            }
            let watch_fd = match listener.fd.try_clone() {
                Ok(fd) => fd,
                Err(err) => {
                    error!("{name}: cannot duplicate the listener: {err}");
                    let _ = self.poller.delete(status_read.as_fd());
                    continue;
                }
            };
            families.push(pool.family);
            self.pools.insert(
                pool,
                PoolIo {
                    listener,
                    watch_fd,
                    status_read,
                    status_write,
                    pending: Vec::new(),
                    watched: false,
                },
            );
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

    pub(super) fn watch(&mut self, pool: PoolId, on: bool) {
        let Some(io) = self.pools.get_mut(&pool) else {
            return;
        };
        if io.watched == on {
            return;
        }
        let result = if on {
            self.poller
                .add(io.watch_fd.as_fd(), pool_token(KIND_LISTENER, pool))
        } else {
            self.poller.delete(io.watch_fd.as_fd())
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
