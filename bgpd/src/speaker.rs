//! The tokio driver around the pure cores: one task per peer (FSM + socket + timers), one RIB
//! task, one listener task. Channels are bounded, so a slow peer applies back-pressure to the RIB
//! instead of growing a queue without limit.
//!
//! ```text
//!   listener ──(inbound TcpStream)──► peer task ×N ──(RibInput)──► RIB task ──► best-path stream
//!                                        ▲   FSM: fsm::Session           │  (agent: kernel routes)
//!   Speaker handle ──(Command)──► RIB ───┘◄──(Send update / stop)────────┘
//! ```

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::fsm::{self, DownReason, Event, Output, Session, SessionConfig, State, Timer};
use crate::policy::Policy;
use crate::rib::{
    BestChange, NextHopMode, PeerConfig, PeerCounters, PeerId, Rib, RibInput, RibOutput,
};
use crate::types::{
    Afi, Capabilities, GracefulRestart, Message, Notification, PathAttrs, Update, codes,
};
use crate::wire;

/// Speaker-wide settings.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// Our AS.
    pub local_as: u32,
    /// Our BGP identifier.
    pub router_id: Ipv4Addr,
    /// Where to accept sessions (empty: nowhere, active only).
    pub listen: Vec<SocketAddr>,
    /// Set to act as a route reflector (RFC 4456).
    pub cluster_id: Option<Ipv4Addr>,
    /// Restart time we advertise (RFC 4724), 0 to not advertise graceful restart.
    pub graceful_restart_time: u16,
    /// We are restarting: set the R bit and keep peers' stale routes (RFC 4724 §4.1).
    pub restarting: bool,
}

/// One peer's settings.
#[derive(Debug, Clone)]
pub struct PeerSpec {
    /// Address.
    pub address: IpAddr,
    /// TCP port (179).
    pub port: u16,
    /// Remote AS.
    pub remote_as: u32,
    /// Local address to connect from (and to use as next hop).
    pub local_address: Option<IpAddr>,
    /// Never connect; wait for the peer.
    pub passive: bool,
    /// Proposed hold time.
    pub hold_time: u16,
    /// Connect-retry interval.
    pub connect_retry: Duration,
    /// A route-reflector client.
    pub rr_client: bool,
    /// Next-hop handling.
    pub next_hop: NextHopMode,
    /// Import policy.
    pub import: Policy,
    /// Export policy.
    pub export: Policy,
    /// Prefix limit.
    pub max_prefixes: Option<u32>,
    /// TCP-MD5 key (RFC 2385): every segment of the session is signed with it, and unsigned or
    /// wrongly signed segments are dropped by the kernel.
    pub password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only segments that arrive with a TTL of at
    /// least 256 − hops.
    pub ttl_security_hops: Option<u8>,
    /// Families to offer.
    pub families: BTreeSet<Afi>,
}

impl PeerSpec {
    /// A peer with defaults: port 179, hold 90 s, both families.
    pub fn new(address: IpAddr, remote_as: u32) -> Self {
        PeerSpec {
            address,
            port: 179,
            remote_as,
            local_address: None,
            passive: false,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            rr_client: false,
            next_hop: NextHopMode::Auto,
            import: Policy::accept_all(),
            export: Policy::accept_all(),
            max_prefixes: None,
            password: None,
            ttl_security_hops: None,
            families: BTreeSet::from([Afi::Ipv4, Afi::Ipv6]),
        }
    }

    fn rib_config(&self) -> PeerConfig {
        PeerConfig {
            address: self.address,
            remote_as: self.remote_as,
            rr_client: self.rr_client,
            next_hop: self.next_hop,
            import: self.import.clone(),
            export: self.export.clone(),
            max_prefixes: self.max_prefixes,
        }
    }
}

/// What the agent sees of one peer.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    /// Address.
    pub address: IpAddr,
    /// Remote AS.
    pub remote_as: u32,
    /// FSM state.
    pub state: State,
    /// When the state was entered.
    pub since: SystemTime,
    /// Received prefixes.
    pub received: u64,
    /// RIB counters (accepted, advertised, stale).
    pub counters: PeerCounters,
    /// Why the session last went down.
    pub last_error: Option<String>,
    /// The last NOTIFICATION sent or received.
    pub last_notification: Option<Notification>,
}

// Channel messages are moved once; boxing would add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Command {
    AddPeer(PeerSpec, oneshot::Sender<Result<(), String>>),
    RemovePeer(IpAddr, Option<String>, oneshot::Sender<bool>),
    Originate(Vec<(IpNet, PathAttrs)>),
    Withdraw(Vec<IpNet>),
    Status(oneshot::Sender<Vec<PeerStatus>>),
    LocRib(oneshot::Sender<Vec<(IpNet, Vec<IpAddr>)>>),
    Count(oneshot::Sender<usize>),
    Shutdown(String, oneshot::Sender<()>),
}

/// Messages from peer tasks to the RIB task.
// Channel messages are moved once; boxing would add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum FromPeer {
    Rib(RibInput),
    State {
        peer: PeerId,
        state: State,
        error: Option<String>,
        notification: Option<Notification>,
    },
}

/// Messages from the RIB task to a peer task.
// Channel messages are moved once; boxing would add an allocation per message.
#[allow(clippy::large_enum_variant)]
enum ToPeer {
    Send(Update),
    Inbound(TcpStream),
    Stop(Option<Notification>),
}

/// Handle to a running speaker; cheap to clone.
#[derive(Clone)]
pub struct Speaker {
    cmd: mpsc::Sender<Command>,
    best: broadcast::Sender<Arc<Vec<BestChange>>>,
}

impl Speaker {
    /// Starts the speaker's tasks; binds the listen addresses first (errors are returned).
    pub async fn start(cfg: SpeakerConfig) -> std::io::Result<Speaker> {
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (best_tx, _) = broadcast::channel(1024);
        let (inbound_tx, inbound_rx) = mpsc::channel(64);
        let mut listeners = Vec::new();
        for addr in &cfg.listen {
            let listener = Arc::new(listen(*addr)?);
            listeners.push(listener.clone());
            let tx = inbound_tx.clone();
            tokio::spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, from)) => {
                            if tx.send((stream, from)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "accept failed"),
                    }
                }
            });
        }
        let mut task = RibTask::new(cfg, best_tx.clone());
        task.listeners = listeners;
        tokio::spawn(task.run(cmd_rx, inbound_rx));
        Ok(Speaker {
            cmd: cmd_tx,
            best: best_tx,
        })
    }

    /// Adds a peer (fails if one with that address exists).
    pub async fn add_peer(&self, spec: PeerSpec) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::AddPeer(spec, tx))
            .await
            .map_err(|_| "speaker stopped".to_string())?;
        rx.await.map_err(|_| "speaker stopped".to_string())?
    }

    /// Removes a peer, sending Cease (administrative shutdown with `message`, RFC 8203, or
    /// peer de-configured).
    pub async fn remove_peer(&self, address: IpAddr, message: Option<String>) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .cmd
            .send(Command::RemovePeer(address, message, tx))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Originates (or updates) prefixes.
    pub async fn originate(&self, routes: Vec<(IpNet, PathAttrs)>) {
        let _ = self.cmd.send(Command::Originate(routes)).await;
    }

    /// Stops originating prefixes.
    pub async fn withdraw(&self, prefixes: Vec<IpNet>) {
        let _ = self.cmd.send(Command::Withdraw(prefixes)).await;
    }

    /// Status of every peer.
    pub async fn status(&self) -> Vec<PeerStatus> {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Status(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// The Loc-RIB: prefix → ECMP next hops.
    pub async fn loc_rib(&self) -> Vec<(IpNet, Vec<IpAddr>)> {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::LocRib(tx)).await.is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Number of prefixes in the Loc-RIB (cheap, unlike [`Speaker::loc_rib`]).
    pub async fn prefix_count(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Count(tx)).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// A stream of best-path changes, in batches.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<BestChange>>> {
        self.best.subscribe()
    }

    /// Sends Cease/administrative shutdown with `message` to every peer and stops.
    pub async fn shutdown(&self, message: &str) {
        let (tx, rx) = oneshot::channel();
        if self
            .cmd
            .send(Command::Shutdown(message.to_string(), tx))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }
}

struct PeerEntry {
    spec: PeerSpec,
    tx: mpsc::Sender<ToPeer>,
    status: PeerStatus,
}

struct RibTask {
    cfg: SpeakerConfig,
    rib: Rib,
    peers: HashMap<PeerId, PeerEntry>,
    by_addr: HashMap<IpAddr, PeerId>,
    next_id: PeerId,
    best: broadcast::Sender<Arc<Vec<BestChange>>>,
    from_peers_tx: mpsc::Sender<FromPeer>,
    from_peers_rx: Option<mpsc::Receiver<FromPeer>>,
    /// Our listening sockets: TCP-MD5 keys for passive opens are installed on them.
    listeners: Vec<Arc<TcpListener>>,
}

impl RibTask {
    fn new(cfg: SpeakerConfig, best: broadcast::Sender<Arc<Vec<BestChange>>>) -> Self {
        let (tx, rx) = mpsc::channel(1024);
        RibTask {
            rib: Rib::new(cfg.local_as, cfg.router_id, cfg.cluster_id),
            cfg,
            peers: HashMap::new(),
            by_addr: HashMap::new(),
            next_id: 1,
            best,
            from_peers_tx: tx,
            from_peers_rx: Some(rx),
            listeners: Vec::new(),
        }
    }

    async fn run(
        mut self,
        mut cmds: mpsc::Receiver<Command>,
        mut inbound: mpsc::Receiver<(TcpStream, SocketAddr)>,
    ) {
        let mut from_peers = self.from_peers_rx.take().expect("once");
        loop {
            tokio::select! {
                biased;
                ev = from_peers.recv() => {
                    let Some(ev) = ev else { return };
                    self.on_peer_event(ev).await;
                }
                cmd = cmds.recv() => {
                    let Some(cmd) = cmd else { return };
                    if self.on_command(cmd).await {
                        return;
                    }
                }
                conn = inbound.recv() => {
                    let Some((stream, from)) = conn else { continue };
                    let ip = canonical(from.ip());
                    match self.by_addr.get(&ip).and_then(|id| self.peers.get(id)) {
                        Some(p) => { let _ = p.tx.send(ToPeer::Inbound(stream)).await; }
                        None => tracing::info!(%from, "connection from an unknown address refused"),
                    }
                }
            }
        }
    }

    async fn apply(&mut self, input: RibInput) {
        // Best-path reports are built only when somebody listens.
        self.rib.set_report_best(self.best.receiver_count() > 0);
        let outputs = self.rib.step(input);
        for o in outputs {
            match o {
                RibOutput::Send { peer, update } => {
                    if let Some(p) = self.peers.get(&peer) {
                        // Bounded: waits when the peer's writer is behind (back-pressure).
                        let _ = p.tx.send(ToPeer::Send(update)).await;
                    }
                }
                RibOutput::BestChanged(changes) => {
                    let _ = self.best.send(Arc::new(changes));
                }
                RibOutput::StartStaleTimer { peer, after } => {
                    let tx = self.from_peers_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        let _ = tx
                            .send(FromPeer::Rib(RibInput::StaleTimerExpired { peer }))
                            .await;
                    });
                }
                RibOutput::MaxPrefixesExceeded { peer, limit } => {
                    if let Some(p) = self.peers.get(&peer) {
                        tracing::warn!(peer = %p.spec.address, limit, "maximum prefixes exceeded");
                        let mut n = Notification::new(codes::CEASE, codes::CEASE_MAX_PREFIXES);
                        n.data = vec![1, 0, 0, 0, 0, 0, 0];
                        n.data[3..7].copy_from_slice(&limit.to_be_bytes());
                        let _ = p.tx.send(ToPeer::Stop(Some(n))).await;
                    }
                }
            }
        }
    }

    async fn on_peer_event(&mut self, ev: FromPeer) {
        match ev {
            FromPeer::Rib(input) => {
                // A peer that was removed may still have messages in flight.
                let known = match &input {
                    RibInput::Update { peer, update } => match self.peers.get_mut(peer) {
                        Some(p) => {
                            // Counted here: one channel message per UPDATE, not two.
                            p.status.received += update.announced.len() as u64;
                            true
                        }
                        None => false,
                    },
                    RibInput::PeerUp { peer, .. } | RibInput::PeerDown { peer, .. } => {
                        self.peers.contains_key(peer)
                    }
                    _ => true,
                };
                if known {
                    self.apply(input).await;
                }
            }
            FromPeer::State {
                peer,
                state,
                error,
                notification,
            } => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.status.state != state {
                        p.status.since = SystemTime::now();
                    }
                    p.status.state = state;
                    if error.is_some() {
                        p.status.last_error = error;
                    }
                    if notification.is_some() {
                        p.status.last_notification = notification;
                    }
                }
            }
        }
    }

    /// Returns true when the speaker must stop.
    async fn on_command(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::AddPeer(spec, reply) => {
                let addr = canonical(spec.address);
                if self.by_addr.contains_key(&addr) {
                    let _ = reply.send(Err(format!("peer {addr} already exists")));
                    return false;
                }
                if let Err(e) = self.set_listener_keys(addr, spec.password.as_deref()) {
                    let _ = reply.send(Err(format!("peer {addr}: TCP-MD5 key: {e}")));
                    return false;
                }
                let id = self.next_id;
                self.next_id += 1;
                let (tx, rx) = mpsc::channel(256);
                let status = PeerStatus {
                    address: addr,
                    remote_as: spec.remote_as,
                    state: State::Idle,
                    since: SystemTime::now(),
                    received: 0,
                    counters: PeerCounters::default(),
                    last_error: None,
                    last_notification: None,
                };
                let task = PeerTask::new(id, spec.clone(), &self.cfg, self.from_peers_tx.clone());
                tokio::spawn(task.run(rx));
                self.by_addr.insert(addr, id);
                self.peers.insert(id, PeerEntry { spec, tx, status });
                let _ = reply.send(Ok(()));
            }
            Command::RemovePeer(addr, message, reply) => {
                let addr = canonical(addr);
                let Some(id) = self.by_addr.remove(&addr) else {
                    let _ = reply.send(false);
                    return false;
                };
                if let Some(p) = self.peers.remove(&id) {
                    if p.spec.password.is_some() {
                        let _ = self.set_listener_keys(addr, None);
                    }
                    let n = match message {
                        Some(m) => Notification::admin_shutdown(&m),
                        None => Notification::new(codes::CEASE, codes::CEASE_PEER_DECONFIGURED),
                    };
                    let _ = p.tx.send(ToPeer::Stop(Some(n))).await;
                }
                self.apply(RibInput::PeerRemoved { peer: id }).await;
                let _ = reply.send(true);
            }
            Command::Originate(routes) => self.apply(RibInput::Originate { routes }).await,
            Command::Withdraw(prefixes) => self.apply(RibInput::WithdrawLocal { prefixes }).await,
            Command::Status(reply) => {
                let mut v: Vec<PeerStatus> = self
                    .peers
                    .iter()
                    .map(|(id, p)| PeerStatus {
                        counters: self.rib.counters(*id),
                        ..p.status.clone()
                    })
                    .collect();
                v.sort_by_key(|s| s.address);
                let _ = reply.send(v);
            }
            Command::Count(reply) => {
                let _ = reply.send(self.rib.len());
            }
            Command::LocRib(reply) => {
                let _ = reply.send(crate::rib::best_next_hops(&self.rib).into_iter().collect());
            }
            Command::Shutdown(message, reply) => {
                for p in self.peers.values() {
                    let _ =
                        p.tx.send(ToPeer::Stop(Some(Notification::admin_shutdown(&message))))
                            .await;
                }
                // Give the peer tasks a moment to flush their NOTIFICATIONs.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = reply.send(());
                return true;
            }
        }
        false
    }
}

impl RibTask {
    /// Installs (or removes) a peer's TCP-MD5 key on the listening sockets of its family, so
    /// that its connections are accepted only when signed with that key (RFC 2385).
    fn set_listener_keys(&self, peer: IpAddr, key: Option<&str>) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        for l in &self.listeners {
            let is_v6 = l.local_addr()?.is_ipv6();
            if is_v6 != peer.is_ipv6() {
                continue; // IPv6 listeners are IPv6-only
            }
            match key {
                Some(k) => tortie_sys::set_tcp_md5_key(l.as_fd(), is_v6, peer, Some(k.as_bytes()))?,
                // Removing a key that was never installed fails with ENOENT: nothing to undo.
                None => {
                    let _ = tortie_sys::set_tcp_md5_key(l.as_fd(), is_v6, peer, None);
                }
            }
        }
        Ok(())
    }
}

/// GTSM (RFC 5082 §3): send with TTL (hop limit) 255 and drop what arrives with less than
/// 256 − hops, so that a spoofer further away than the peer cannot reach the session.
fn apply_ttl_security(
    socket: std::os::fd::BorrowedFd<'_>,
    ipv6: bool,
    hops: u8,
) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(&socket);
    if ipv6 {
        sock.set_unicast_hops_v6(255)?;
    } else {
        sock.set_ttl_v4(255)?;
    }
    tortie_sys::set_min_ttl(socket, ipv6, 255 - (hops - 1))
}

/// A listening socket; IPv6 ones are IPv6-only, so that `0.0.0.0:179` and `[::]:179` can be
/// listened on side by side.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    // Keep each SYN's headers: an inbound GTSM peer is checked against its SYN's TTL.
    tortie_sys::save_syn(std::os::fd::AsFd::as_fd(&sock))?;
    sock.listen(128)?;
    TcpListener::from_std(sock.into())
}

/// IPv4-mapped IPv6 addresses (from dual-stack sockets) as plain IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

struct PeerTask {
    id: PeerId,
    spec: PeerSpec,
    session: Session,
    to_rib: mpsc::Sender<FromPeer>,
    timers: HashMap<Timer, Instant>,
    stream: Option<TcpStream>,
    connecting: Option<tokio::task::JoinHandle<std::io::Result<TcpStream>>>,
    decoder: wire::FrameDecoder,
    decode_cx: wire::DecodeCxt,
    encode_cx: wire::EncodeCxt,
    local_address: Option<IpAddr>,
    restart_time: Option<Duration>,
    last_notification: Option<Notification>,
    local_as: u32,
    local_id: Ipv4Addr,
}

impl PeerTask {
    fn new(
        id: PeerId,
        spec: PeerSpec,
        cfg: &SpeakerConfig,
        to_rib: mpsc::Sender<FromPeer>,
    ) -> Self {
        let mut caps = Capabilities {
            multiprotocol: spec.families.clone(),
            route_refresh: true,
            four_octet_as: Some(cfg.local_as),
            ..Default::default()
        };
        if cfg.graceful_restart_time > 0 {
            caps.graceful_restart = Some(GracefulRestart {
                restarting: cfg.restarting,
                restart_time: cfg.graceful_restart_time,
                // We keep forwarding state across our own restart: routes stay in the kernel.
                families: spec.families.iter().map(|a| (*a, true)).collect(),
            });
        }
        let session = Session::new(SessionConfig {
            local_as: cfg.local_as,
            local_id: cfg.router_id,
            peer_as: Some(spec.remote_as),
            hold_time: spec.hold_time,
            connect_retry: spec.connect_retry,
            passive: spec.passive,
            delay_open: None,
            idle_hold: Duration::from_secs(1),
            capabilities: caps,
            min_hold_time: 3,
            graceful_restart: cfg.graceful_restart_time > 0,
        });
        PeerTask {
            id,
            spec,
            session,
            to_rib,
            timers: HashMap::new(),
            stream: None,
            connecting: None,
            decoder: wire::FrameDecoder::new(),
            decode_cx: wire::DecodeCxt::before_open(),
            encode_cx: wire::EncodeCxt::before_open(),
            local_address: None,
            restart_time: None,
            last_notification: None,
            local_as: cfg.local_as,
            local_id: cfg.router_id,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<ToPeer>) {
        let start = if self.spec.passive {
            Event::ManualStartPassive
        } else {
            Event::ManualStart
        };
        if !self.handle(start).await {
            return;
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let deadline = self.timers.values().min().copied();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending::<()>().await,
                }
            };
            let read = async {
                match self.stream.as_mut() {
                    Some(s) => s.read(&mut buf).await,
                    None => std::future::pending().await,
                }
            };
            let connect = async {
                match self.connecting.as_mut() {
                    Some(h) => h.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                msg = rx.recv() => {
                    let go_on = match msg {
                        None => {
                            self.handle(Event::ManualStop { notification: Some(Notification::new(codes::CEASE, codes::CEASE_PEER_DECONFIGURED)) }).await;
                            false
                        }
                        Some(ToPeer::Send(update)) => self.send_update(update).await,
                        Some(ToPeer::Stop(n)) => { self.handle(Event::ManualStop { notification: n }).await; false }
                        Some(ToPeer::Inbound(stream)) => self.inbound(stream).await,
                    };
                    if !go_on {
                        return;
                    }
                }
                n = read => {
                    let ok = match n {
                        Ok(0) | Err(_) => { self.stream = None; self.handle(Event::TcpConnectionFails).await }
                        Ok(n) => self.on_bytes(n, &buf).await,
                    };
                    if !ok { return; }
                }
                res = connect => {
                    self.connecting = None;
                    let ok = match res {
                        Ok(Ok(stream)) => {
                            self.attach(stream);
                            self.handle(Event::TcpCrAcked).await
                        }
                        _ => self.handle(Event::TcpConnectionFails).await,
                    };
                    if !ok { return; }
                }
                () = sleep => {
                    let now = Instant::now();
                    let due: Vec<Timer> = self.timers.iter().filter(|(_, d)| **d <= now).map(|(t, _)| *t).collect();
                    for t in due {
                        self.timers.remove(&t);
                        if !self.handle(Event::TimerExpired(t)).await {
                            return;
                        }
                    }
                }
            }
        }
    }

    fn attach(&mut self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        if let Some(hops) = self.spec.ttl_security_hops {
            // Inbound connections get GTSM here, before we read their first byte; the check
            // then drops every later segment that comes from too far away.
            use std::os::fd::AsFd;
            let ipv6 = stream.local_addr().is_ok_and(|a| a.is_ipv6());
            if let Err(e) = apply_ttl_security(stream.as_fd(), ipv6, hops) {
                tracing::warn!(peer = %self.spec.address, error = %e, "cannot set up TTL security");
            }
        }
        self.local_address = stream.local_addr().ok().map(|a| canonical(a.ip()));
        self.stream = Some(stream);
        self.decoder = wire::FrameDecoder::new();
        self.decode_cx = wire::DecodeCxt::before_open();
        self.encode_cx = wire::EncodeCxt::before_open();
    }

    async fn inbound(&mut self, stream: TcpStream) -> bool {
        if let Some(hops) = self.spec.ttl_security_hops {
            // RFC 5082 §3 for the handshake: the minimum TTL set in attach() only guards what
            // arrives after it, so the SYN (saved by the listener) is checked here.
            use std::os::fd::AsFd;
            let min = 255 - (hops - 1);
            match tortie_sys::saved_syn_ttl(stream.as_fd()) {
                Ok(Some(ttl)) if ttl >= min => {}
                other => {
                    tracing::info!(peer = %self.spec.address, syn_ttl = ?other.ok().flatten(), min, "connection refused by TTL security");
                    return true;
                }
            }
        }
        // RFC 4271 §6.8, simplified to what the FSM can know: an Established (or OpenConfirm)
        // session keeps its connection; otherwise the inbound connection replaces ours.
        match self.session.state() {
            State::Established if self.session.new_connection_supersedes() => {
                // RFC 4724 §4.2: a graceful-restart peer connecting again while our session looks
                // up has restarted. The old session is gone (its routes turn stale, not
                // withdrawn) and the new connection takes over at once, without waiting for
                // the hold timer.
                self.stream = None;
                if !self.handle(Event::TcpConnectionFails).await {
                    return false;
                }
                self.restart_session().await;
            }
            State::Established | State::OpenConfirm => {
                let keep_ours = self.session.negotiated().is_none_or(|n| {
                    fsm::resolve_collision(self.session_local_id(), n.peer_id)
                        == fsm::CollisionWinner::LocallyInitiated
                });
                if keep_ours || self.session.state() == State::Established {
                    drop(stream);
                    return true;
                }
                // RFC 4271 §6.8: the peer's connection wins; close ours with Cease/7.
                self.handle(Event::OpenCollisionDump).await;
                self.restart_session().await;
            }
            _ => {
                if let Some(h) = self.connecting.take() {
                    h.abort();
                }
                if self.stream.is_some() {
                    self.stream = None;
                    self.restart_session().await;
                }
            }
        }
        self.attach(stream);
        self.handle(Event::TcpConnectionConfirmed).await
    }

    fn session_local_id(&self) -> Ipv4Addr {
        self.local_id
    }

    async fn restart_session(&mut self) {
        self.timers.clear();
        let _ = self.handle(Event::ManualStartPassive).await;
    }

    async fn on_bytes(&mut self, n: usize, buf: &[u8]) -> bool {
        self.decoder.extend(&buf[..n]);
        loop {
            let frame = match self.decoder.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return true,
                Err(notification) => return self.handle(Event::MessageError(notification)).await,
            };
            // UPDATEs reach the RIB task as one message each (`Output::Update`), which also
            // counts their prefixes.
            let event = match wire::decode(&frame, &self.decode_cx) {
                Ok(msg) => Event::MessageReceived(msg),
                Err(notification) => Event::MessageError(notification),
            };
            if !self.handle(event).await {
                return false;
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> bool {
        let Some(s) = self.stream.as_mut() else {
            return true;
        };
        match s.write_all(bytes).await {
            Ok(()) => true,
            Err(_) => {
                self.stream = None;
                self.handle_boxed(Event::TcpConnectionFails).await
            }
        }
    }

    fn handle_boxed(
        &mut self,
        ev: Event,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>> {
        Box::pin(self.handle(ev))
    }

    async fn send_update(&mut self, update: Update) -> bool {
        if self.session.state() != State::Established {
            return true; // the RIB re-sends everything at PeerUp
        }
        match wire::encode_updates(&update, &self.encode_cx) {
            Ok(frames) => {
                let mut all = Vec::with_capacity(frames.iter().map(Vec::len).sum());
                for f in frames {
                    all.extend_from_slice(&f);
                }
                self.write(&all).await
            }
            Err(e) => {
                tracing::error!(peer = %self.spec.address, error = %e, "cannot encode an UPDATE; dropped");
                true
            }
        }
    }

    /// Feeds one event to the FSM and carries out its outputs. False: the task must end.
    async fn handle(&mut self, ev: Event) -> bool {
        let stop_requested = matches!(ev, Event::ManualStop { .. });
        let outputs = self.session.step(ev);
        for o in outputs {
            match o {
                Output::Connect => {
                    let addr = SocketAddr::new(self.spec.address, self.spec.port);
                    let local = self.spec.local_address;
                    let password = self.spec.password.clone();
                    let ttl_hops = self.spec.ttl_security_hops;
                    self.connecting = Some(tokio::spawn(async move {
                        use std::os::fd::AsFd;
                        let sock = if addr.is_ipv4() {
                            tokio::net::TcpSocket::new_v4()?
                        } else {
                            tokio::net::TcpSocket::new_v6()?
                        };
                        // Both must be in place before the SYN leaves.
                        if let Some(key) = &password {
                            tortie_sys::set_tcp_md5_key(
                                sock.as_fd(),
                                addr.is_ipv6(),
                                addr.ip(),
                                Some(key.as_bytes()),
                            )?;
                        }
                        if let Some(hops) = ttl_hops {
                            apply_ttl_security(sock.as_fd(), addr.is_ipv6(), hops)?;
                        }
                        if let Some(l) = local {
                            sock.bind(SocketAddr::new(l, 0))?;
                        }
                        tokio::time::timeout(Duration::from_secs(5), sock.connect(addr))
                            .await
                            .map_err(|_| {
                                std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "connect timed out",
                                )
                            })?
                    }));
                }
                Output::Disconnect => {
                    if let Some(mut s) = self.stream.take() {
                        let _ = s.shutdown().await;
                    }
                    if let Some(h) = self.connecting.take() {
                        h.abort();
                    }
                }
                Output::Send(msg) => {
                    if let Message::Notification(n) = &msg {
                        self.last_notification = Some(n.clone());
                    }
                    match wire::encode(&msg, &self.encode_cx) {
                        Ok(bytes) => {
                            if !Box::pin(self.write(&bytes)).await {
                                return false;
                            }
                        }
                        Err(e) => {
                            tracing::error!(peer = %self.spec.address, error = %e, "cannot encode a message")
                        }
                    }
                }
                Output::StartTimer(t, d) => {
                    self.timers.insert(t, Instant::now() + d);
                }
                Output::StopTimer(t) => {
                    self.timers.remove(&t);
                }
                Output::Established(negotiated) => {
                    let is_ibgp = negotiated.peer_as == self.session_local_as();
                    self.decode_cx = wire::DecodeCxt::from_negotiated(
                        &negotiated,
                        self.session_local_as(),
                        is_ibgp,
                    );
                    self.encode_cx = wire::EncodeCxt::from_negotiated(&negotiated);
                    self.restart_time = negotiated
                        .peer_graceful_restart
                        .as_ref()
                        .map(|g| Duration::from_secs(u64::from(g.restart_time)));
                    let local = self
                        .local_address
                        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                    let _ = self
                        .to_rib
                        .send(FromPeer::Rib(RibInput::PeerUp {
                            peer: self.id,
                            config: self.spec.rib_config(),
                            bgp_id: negotiated.peer_id,
                            local_address: self.spec.local_address.unwrap_or(local),
                            families: negotiated.families.clone(),
                        }))
                        .await;
                }
                Output::Update(update) => {
                    let _ = self
                        .to_rib
                        .send(FromPeer::Rib(RibInput::Update {
                            peer: self.id,
                            update,
                        }))
                        .await;
                }
                Output::RouteRefreshRequested(afi) => {
                    let _ = self
                        .to_rib
                        .send(FromPeer::Rib(RibInput::RouteRefresh { peer: self.id, afi }))
                        .await;
                }
                Output::SessionDown { reason, graceful } => {
                    let stale_for = if graceful { self.restart_time } else { None };
                    let notification = match &reason {
                        DownReason::NotificationSent(n) | DownReason::NotificationReceived(n) => {
                            Some(n.clone())
                        }
                        _ => self.last_notification.take(),
                    };
                    tracing::info!(peer = %self.spec.address, ?reason, graceful, "session down");
                    let _ = self
                        .to_rib
                        .send(FromPeer::State {
                            peer: self.id,
                            state: State::Idle,
                            error: Some(format!("{reason:?}")),
                            notification,
                        })
                        .await;
                    let _ = self
                        .to_rib
                        .send(FromPeer::Rib(RibInput::PeerDown {
                            peer: self.id,
                            stale_for,
                        }))
                        .await;
                }
                Output::StateChanged { to, .. } => {
                    let _ = self
                        .to_rib
                        .send(FromPeer::State {
                            peer: self.id,
                            state: to,
                            error: None,
                            notification: None,
                        })
                        .await;
                }
            }
        }
        !stop_requested
    }

    fn session_local_as(&self) -> u32 {
        self.local_as
    }
}
