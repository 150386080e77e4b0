//! The listening sockets of the loop: binding a service's addresses (taking over the sockets
//! a reload retires), watching them for connections, and releasing them.

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
        // Sockets follow addresses, not entries: an address that a socket of a service being
        // retired by this reload already serves is taken over (whatever the entry's name,
        // `listen=` spelling or `proto=`), so an edit that keeps a port never refuses.
        let mut candidates: Vec<Rc<Listener>> = Vec::new();
        for (id, io) in &self.pools {
            if take_over.contains(&id.service)
                && !candidates.iter().any(|l| Rc::ptr_eq(l, &io.listener))
            {
                candidates.push(io.listener.clone());
            }
        }
        let planned = sys::net::bind_listeners_reusing(
            &listen,
            proto,
            self.backlog,
            |identity| {
                candidates
                    .iter()
                    .position(|l| l.identity.as_ref() == Some(identity))
            },
            |identity| {
                // A wildcard and a specific address of one port side by side while a reload
                // widens or narrows `listen=`: both need SO_REUSEPORT. Only against sockets
                // this reload retires: any other overlap is a clash, refused as in Cyrus.
                let mut overlapping = false;
                for l in &candidates {
                    if l.identity
                        .as_ref()
                        .is_some_and(|other| sys::net::overlaps(identity, other))
                    {
                        overlapping = true;
                        if let Err(err) = sys::net::allow_port_sharing(l.fd.as_fd()) {
                            warn!(
                                "{name}: cannot share the port of {}: {err}",
                                identity.address
                            );
                        }
                    }
                }
                overlapping
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
                        listeners.push((family_index, l.clone()));
                    }
                }
            }
        }
        // A specific address the retiring entry served that a new wildcard of this entry
        // covers goes on serving under this entry: closing it would reset the connections
        // in its queue, which Linux gives it rather than the wildcard.
        let mut next_index = listeners.len();
        for old in &candidates {
            let Some(old_identity) = &old.identity else {
                continue;
            };
            let taken = listeners.iter().any(|(_, l)| Rc::ptr_eq(l, old));
            let covered = listeners.iter().any(|(_, l)| {
                l.identity
                    .as_ref()
                    .is_some_and(|wide| sys::net::covers(wide, old_identity))
            });
            if !taken && covered {
                info!(
                    "{name}: keeping the open socket on {}, which it covers",
                    old_identity.address
                );
                listeners.push((u8::try_from(next_index).unwrap_or(u8::MAX), old.clone()));
                next_index += 1;
            }
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
            // Still used by another service (a reload handed it over): keep it open. A socket
            // whose connections now go to an overlapping socket of ours (a reload narrowed a
            // wildcard) is not shut down under its queue: it closes with its last worker.
            let superseded = self.overlapped(&io.listener);
            if Rc::strong_count(&io.listener) == 1 && refuse && !superseded {
                if let Err(err) = sys::net::pause_listener(io.listener.fd.as_fd()) {
                    debug!("stop listening: {err}");
                }
            }
            if Rc::strong_count(&io.listener) == 1 {
                if let Listen::Unix(path) = &io.listener.listen {
                    let _ = std::fs::remove_file(path);
                }
            }
            // The status pipe's read end goes with `io`; workers still writing get EPIPE,
            // which Cyrus's workers ignore.
        }
    }

    /// Another open socket of ours takes connections for this one's port and family.
    pub(super) fn overlapped(&self, listener: &Rc<Listener>) -> bool {
        let Some(identity) = &listener.identity else {
            return false;
        };
        self.pools.values().any(|io| {
            !Rc::ptr_eq(&io.listener, listener)
                && io
                    .listener
                    .identity
                    .as_ref()
                    .is_some_and(|other| sys::net::overlaps(identity, other))
        })
    }
}
