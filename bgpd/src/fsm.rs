//! # BGP session finite state machine (RFC 4271 §8), sans I/O
//!
//! One [`Session`] is one BGP connection's FSM. It owns no socket, no clock and no task: the
//! driver feeds it [`Event`]s (timer expiries, TCP indications, decoded messages, operator
//! commands) and carries out the [`Output`]s it returns (open/close TCP, send a message, arm or
//! disarm a timer, hand an UPDATE to the RIB). Same input sequence, same outputs: the unit
//! tests and the replay tests under `bgpd/tests/` rely on that.
//!
//! ```text
//!               passive start                  ConnectRetry expiry
//!     +------+ ---------------> +--------+ ---------------------------> +---------+
//!     | Idle |                  | Active |                              | Connect |
//!     +------+ ---------------------------------------------------->    +---------+
//!        ^      start, IdleHold expiry  |  ^                                 |
//!        |                      TCP up  |  | TCP fails                       | TCP up
//!        |                              v  |                                 |
//!        |                         +----------+ <----------------------------+
//!        |                         | OpenSent |
//!        |                         +----------+
//!        |                              | OPEN accepted: KEEPALIVE sent
//!        |                              v
//!        |                        +-------------+
//!        |                        | OpenConfirm |
//!        |                        +-------------+
//!        |                              | KEEPALIVE received
//!        |                              v
//!        |                        +-------------+
//!        +---- errors, stops ---- | Established |      (and from every other state)
//!                                 +-------------+
//!
//!   With DelayOpen, "TCP up" stays in Connect/Active until the DelayOpen timer expires
//!   (then OpenSent) or the peer's OPEN arrives first (then straight to OpenConfirm).
//! ```
//!
//! ## Driver contract
//!
//! * **Timers.** `StartTimer(t, d)` (re)arms `t` to fire once after `d`, replacing a pending
//!   one; `StopTimer(t)` disarms it. The FSM remembers which timers it armed and ignores the
//!   expiry of one that is not armed (a stale expiry that raced with a `StopTimer`), so the
//!   driver need not purge its queue. Jitter (RFC 4271 §10) is the driver's business.
//! * **Connections.** `Connect` asks for an outbound TCP connection; `Disconnect` closes the
//!   connection, or aborts the attempt in progress. A session owns at most one connection.
//!   Events from a connection the driver already closed must not be fed back: the FSM ignores
//!   messages while it has no connection, but TCP indications are taken at face value.
//! * **Collisions** (§6.8). A second connection to the same peer is not fed to a session
//!   that already has one (the FSM ignores `TcpCrAcked`/`TcpConnectionConfirmed` then, as the
//!   RFC's "tracked until an OPEN arrives"). The driver runs it in a second `Session` (built
//!   with `passive = true`, stepped with `AutomaticStartPassive` then
//!   `TcpConnectionConfirmed`), and once an OPEN tells it the peer's BGP identifier, calls
//!   [`resolve_collision`] and steps [`Event::OpenCollisionDump`] on the loser.
//! * **Automatic restarts.** After an error the FSM goes to Idle and arms the IdleHold timer
//!   ([`Session::idle_hold_delay`]: doubling with the ConnectRetryCounter up to
//!   [`IDLE_HOLD_CAP`]); its expiry restarts the session by itself (RFC event 13 acts as
//!   AutomaticStart), so the driver only forwards `TimerExpired(IdleHold)`. A `ManualStop`
//!   disarms it.
//!
//! ## RFC options in force (§8.1.1)
//!
//! `AllowAutomaticStart`, `AllowAutomaticStop`, `DampPeerOscillations` and
//! `SendNOTIFICATIONwithoutOPEN` are TRUE; `DelayOpen` follows [`SessionConfig::delay_open`];
//! `PassiveTcpEstablishment` follows [`SessionConfig::passive`] (and means *never* initiate,
//! as BIRD's `passive on`); `CollisionDetectEstablishedState` is up to the driver (it may
//! step `OpenCollisionDump` in Established). `TrackTcpState` is FALSE.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::types::{Afi, Capabilities, Message, Negotiated, Notification, Open, Update, codes};

/// The only BGP version we speak.
pub const BGP_VERSION: u8 = 4;

/// AS_TRANS (RFC 6793 §9): the 2-octet "My Autonomous System" of a 4-octet AS.
pub const AS_TRANS: u16 = 23456;

/// The hold timer's "large value" while waiting for the peer's OPEN (RFC 4271 §8.2.2
/// suggests 4 minutes).
pub const OPEN_SENT_HOLD_TIME: Duration = Duration::from_secs(240);

/// Upper bound of the doubling IdleHold delay (Calico's BIRD: `error wait time 5,30`). A
/// configured [`SessionConfig::idle_hold`] above it is used as is, without doubling. See
/// [`Session::idle_hold_delay`].
pub const IDLE_HOLD_CAP: Duration = Duration::from_secs(30);

/// After this long in Established (counted in our own KEEPALIVE timer periods, so without a
/// clock) the damping history is forgotten: the next failure waits the base IdleHold again
/// and the ConnectRetryCounter restarts from 0 (BIRD's `error forget time`, default 300 s).
pub const DAMPING_FORGET_AFTER: Duration = Duration::from_secs(300);

// ===== States, timers, events, outputs =====

/// Session states (RFC 4271 §8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Refuses connections; waits for a start (or the IdleHold timer).
    Idle,
    /// Waiting for our outbound TCP connection (and listening).
    Connect,
    /// Listening for the peer's connection.
    Active,
    /// Our OPEN is sent; waiting for the peer's.
    OpenSent,
    /// OPENs exchanged, our KEEPALIVE sent; waiting for the peer's KEEPALIVE.
    OpenConfirm,
    /// Up: UPDATEs flow.
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        };
        f.write_str(name)
    }
}

/// The FSM's timers (RFC 4271 §8.1.3 and the optional DelayOpen and IdleHold timers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Between outbound connection attempts.
    ConnectRetry,
    /// Peer liveness: no KEEPALIVE/UPDATE within the negotiated hold time.
    Hold,
    /// Our KEEPALIVE period (hold time / 3).
    Keepalive,
    /// Wait for the peer's OPEN before sending ours (RFC 4271 §8.1.1 DelayOpen).
    DelayOpen,
    /// Damped restart after an error (RFC 4271 §8.1.1 DampPeerOscillations).
    IdleHold,
}

impl Timer {
    /// All timers, in the order in which they are stopped.
    pub const ALL: [Timer; 5] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::DelayOpen,
        Timer::IdleHold,
    ];

    fn index(self) -> usize {
        match self {
            Timer::ConnectRetry => 0,
            Timer::Hold => 1,
            Timer::Keepalive => 2,
            Timer::DelayOpen => 3,
            Timer::IdleHold => 4,
        }
    }
}

/// Configuration of one session (the RFC's "session attributes").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Our AS (the real one; a 4-octet AS goes out as AS_TRANS plus the capability).
    pub local_as: u32,
    /// Our BGP identifier.
    pub local_id: Ipv4Addr,
    /// The AS the peer must announce; `None` accepts any (dynamic neighbours).
    pub peer_as: Option<u32>,
    /// Hold time we propose (0, or ≥ 3 s; 1 and 2 are raised to 3). Default 90.
    pub hold_time: u16,
    /// ConnectRetryTimer. Default 5 s as Calico's BIRD (`connect retry time 5`); RFC: 120 s.
    pub connect_retry: Duration,
    /// Never initiate a connection: wait in Active for the peer's (BIRD `passive on`).
    pub passive: bool,
    /// DelayOpen: after the connection is up, wait this long for the peer's OPEN before
    /// sending ours.
    pub delay_open: Option<Duration>,
    /// Base IdleHold delay before an automatic restart after an error; doubles with each
    /// further consecutive failure up to [`IDLE_HOLD_CAP`]. Default 5 s.
    pub idle_hold: Duration,
    /// What we put in our OPEN. `four_octet_as`, when set (or needed), is forced to
    /// `local_as`.
    pub capabilities: Capabilities,
    /// Reject a peer hold time below this (0 is always accepted: no keepalives). Default 3.
    pub min_hold_time: u16,
    /// Act as an RFC 4724 receiving speaker: when the session to a GR-capable peer is lost
    /// without a NOTIFICATION exchange, report `SessionDown { graceful: true }` so that the RIB
    /// keeps its routes as stale. (Advertising the capability is `capabilities`' business.)
    pub graceful_restart: bool,
}

impl SessionConfig {
    /// A configuration with the defaults above: IPv4 unicast, route refresh, 4-octet AS.
    pub fn new(local_as: u32, local_id: Ipv4Addr, peer_as: Option<u32>) -> Self {
        SessionConfig {
            local_as,
            local_id,
            peer_as,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            passive: false,
            delay_open: None,
            idle_hold: Duration::from_secs(5),
            capabilities: Capabilities {
                multiprotocol: [Afi::Ipv4].into(),
                route_refresh: true,
                four_octet_as: Some(local_as),
                ..Capabilities::default()
            },
            min_hold_time: 3,
            graceful_restart: false,
        }
    }
}

/// FSM input: the RFC 4271 §8.1 events, as far as the driver cannot resolve them itself.
///
/// Mapping: 1 `ManualStart`, 2 `ManualStop`, 3 `AutomaticStart`, 4 `ManualStartPassive`,
/// 5 `AutomaticStartPassive`, 6/7 (…`_with_DampPeerOscillations`) an automatic start while
/// IdleHold runs, 8 `AutomaticStop`, 9–13 `TimerExpired`, 14/15 (TcpConnection_Valid,
/// Tcp_CR_Invalid) are the driver's (it only hands over valid connections), 16 `TcpCrAcked`,
/// 17 `TcpConnectionConfirmed`, 18 `TcpConnectionFails`, 19/20 `MessageReceived(Open)`
/// (without/with the DelayOpenTimer running), 21/22/28 `MessageError` (code 1/2/3),
/// 23 `OpenCollisionDump`, 24/25 `MessageReceived(Notification)` (version error or not),
/// 26 `MessageReceived(Keepalive)`, 27 `MessageReceived(Update)`.
// Boxing `Message` would cost an allocation per received message for nothing: an event is
// built, moved into `step` and consumed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Event 1, ManualStart: operator start; clears the damping history.
    ManualStart,
    /// Event 4, ManualStart_with_PassiveTcpEstablishment.
    ManualStartPassive,
    /// Event 3, AutomaticStart (event 6 while the IdleHold timer runs: deferred to it).
    AutomaticStart,
    /// Event 5, AutomaticStart_with_PassiveTcpEstablishment (event 7 while IdleHold runs).
    AutomaticStartPassive,
    /// Event 2, ManualStop. Sends `notification` (default: Cease/Administrative Shutdown,
    /// RFC 4486; build one with an RFC 8203 text with [`Notification::admin_shutdown`]) when
    /// a connection is up. No automatic restart follows.
    ManualStop {
        /// The Cease to send.
        notification: Option<Notification>,
    },
    /// Event 8, AutomaticStop (e.g. maximum prefixes, Cease subcode 1): sends
    /// `notification`, then restarts after the IdleHold delay.
    AutomaticStop {
        /// The Cease to send.
        notification: Notification,
    },
    /// Events 9–13: a timer armed by `StartTimer` fired.
    TimerExpired(Timer),
    /// Event 17: an inbound connection from the peer was accepted.
    TcpConnectionConfirmed,
    /// Event 16: our outbound connection is up.
    TcpCrAcked,
    /// Event 18: the connection (or the attempt) failed or was closed by the peer.
    TcpConnectionFails,
    /// Events 19, 20, 24–27 (and ROUTE-REFRESH): a decoded message.
    MessageReceived(Message),
    /// Events 21, 22, 28: the codec rejected a message; the NOTIFICATION to send (code 1:
    /// header, 2: OPEN, 3: UPDATE; others are treated as 3).
    MessageError(Notification),
    /// Event 23, OpenCollisionDump: the driver's collision resolution (§6.8) dropped this
    /// connection; sends Cease/Connection Collision Resolution.
    OpenCollisionDump,
    /// An UPDATE was treated as withdraw (RFC 7606). Informational: the UPDATE itself arrives
    /// as `MessageReceived` (with `treat_as_withdraw` set); no effect on the FSM.
    UpdateTreatAsWithdraw,
    /// Liveness detection (BFD) declared the peer down: session loss like
    /// `TcpConnectionFails` (connection closed, no NOTIFICATION), reason `LivenessDown`.
    /// Ignored while no connection is up.
    LivenessDown,
}

/// FSM output: what the driver must do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer.
    Connect,
    /// Close the TCP connection (or abort the connection attempt).
    Disconnect,
    /// Send a message on the connection.
    Send(Message),
    /// (Re)arm a timer.
    StartTimer(Timer, Duration),
    /// Disarm a timer.
    StopTimer(Timer),
    /// The session is up: build the codec contexts, start the peer's Adj-RIB-Out.
    Established(Negotiated),
    /// An UPDATE for the RIB.
    Update(Update),
    /// The peer asked for our routes of a family again (RFC 2918).
    RouteRefreshRequested(Afi),
    /// The Established session ended. `graceful`: the peer is GR-capable (RFC 4724) and the
    /// session was lost without a NOTIFICATION exchange (TCP failure, hold timer expiry,
    /// liveness down), so the RIB keeps its routes as stale for the peer's restart time
    /// (`Negotiated::peer_graceful_restart`) instead of withdrawing them.
    SessionDown {
        /// Why.
        reason: DownReason,
        /// Keep routes as stale.
        graceful: bool,
    },
    /// The state changed (always the last output of a step).
    StateChanged {
        /// Before.
        from: State,
        /// After.
        to: State,
    },
}

/// Why a session left its connection behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We sent this NOTIFICATION (an error we detected, or an automatic stop).
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// No KEEPALIVE/UPDATE from the peer within the hold time (we sent 4/0).
    HoldTimerExpired,
    /// The TCP connection failed, or the peer closed it.
    TcpFailed,
    /// Liveness detection (BFD) declared the peer down.
    LivenessDown,
    /// Stopped by the operator (or the driver) without an error.
    Stopped,
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::NotificationSent(n) => write!(f, "sent NOTIFICATION: {n}"),
            DownReason::NotificationReceived(n) => write!(f, "received NOTIFICATION: {n}"),
            DownReason::HoldTimerExpired => f.write_str("hold timer expired"),
            DownReason::TcpFailed => f.write_str("TCP connection failed"),
            DownReason::LivenessDown => f.write_str("liveness detection (BFD) down"),
            DownReason::Stopped => f.write_str("stopped"),
        }
    }
}

// ===== Collision resolution (RFC 4271 §6.8, RFC 6286 §2.3) =====

/// Which of two colliding connections to the same peer survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollisionWinner {
    /// The connection we initiated (our `Connect`).
    LocallyInitiated,
    /// The connection the peer initiated (accepted, `TcpConnectionConfirmed`).
    RemotelyInitiated,
}

/// RFC 4271 §6.8: the connection initiated by the speaker with the higher BGP identifier
/// (compared as unsigned 32-bit integers) survives; `remote_id` comes from the peer's OPEN.
///
/// Equal identifiers are only legal between different ASes (an internal peer with our
/// identifier is refused with 2/3), where [`resolve_collision_with_as`] must break the tie;
/// here they fall into the RFC's "otherwise" branch: [`CollisionWinner::LocallyInitiated`].
pub fn resolve_collision(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> CollisionWinner {
    if u32::from(local_id) < u32::from(remote_id) {
        CollisionWinner::RemotelyInitiated
    } else {
        CollisionWinner::LocallyInitiated
    }
}

/// [`resolve_collision`] with the RFC 6286 §2.3 tie-break: with equal identifiers, the
/// connection initiated by the speaker with the larger AS number survives.
pub fn resolve_collision_with_as(
    local_id: Ipv4Addr,
    local_as: u32,
    remote_id: Ipv4Addr,
    remote_as: u32,
) -> CollisionWinner {
    if local_id == remote_id && local_as < remote_as {
        CollisionWinner::RemotelyInitiated
    } else if local_id == remote_id {
        CollisionWinner::LocallyInitiated
    } else {
        resolve_collision(local_id, remote_id)
    }
}

// ===== OPEN =====

/// The OPEN a session with `cfg` sends: version 4, AS_TRANS for a 4-octet AS, the proposed
/// hold time (1 and 2 raised to 3), and the configured capabilities with `four_octet_as` set
/// to `local_as` (added when the AS does not fit in 2 octets).
pub fn local_open(cfg: &SessionConfig) -> Open {
    let mut capabilities = cfg.capabilities.clone();
    if capabilities.four_octet_as.is_some() || cfg.local_as > u32::from(u16::MAX) {
        capabilities.four_octet_as = Some(cfg.local_as);
    }
    Open {
        version: BGP_VERSION,
        my_as: u16::try_from(cfg.local_as).unwrap_or(AS_TRANS),
        hold_time: match cfg.hold_time {
            1 | 2 => 3,
            h => h,
        },
        bgp_id: cfg.local_id,
        capabilities,
    }
}

/// OPEN message checks of RFC 4271 §6.2 (in its order), with RFC 6286 (identifier) and
/// RFC 7607 (AS 0): the NOTIFICATION to send when the peer's OPEN is unacceptable.
///
/// * version ≠ 4 → 2/1, data = the version we support (2 octets);
/// * AS 0, or not the configured peer AS → 2/2;
/// * hold time 1 or 2, or below `min_hold_time` (0 is accepted) → 2/6;
/// * identifier 0, or ours on an internal session → 2/3.
pub fn check_open(cfg: &SessionConfig, open: &Open) -> Result<(), Notification> {
    if open.version != BGP_VERSION {
        let mut n = Notification::new(codes::OPEN, codes::OPEN_UNSUPPORTED_VERSION);
        n.data = u16::from(BGP_VERSION).to_be_bytes().to_vec();
        return Err(n);
    }
    let peer_as = open.asn();
    if peer_as == 0 || cfg.peer_as.is_some_and(|expected| expected != peer_as) {
        return Err(Notification::new(codes::OPEN, codes::OPEN_BAD_PEER_AS));
    }
    if open.hold_time != 0 && (open.hold_time < 3 || open.hold_time < cfg.min_hold_time) {
        return Err(Notification::new(
            codes::OPEN,
            codes::OPEN_UNACCEPTABLE_HOLD_TIME,
        ));
    }
    if open.bgp_id.is_unspecified() || (open.bgp_id == cfg.local_id && peer_as == cfg.local_as) {
        return Err(Notification::new(codes::OPEN, codes::OPEN_BAD_BGP_ID));
    }
    Ok(())
}

/// The KEEPALIVE period for a negotiated hold time: a third of it (RFC 4271 §10).
pub fn keepalive_interval(hold_time: u16) -> Duration {
    Duration::from_secs(u64::from(hold_time)) / 3
}

// ===== Session =====

/// The transport under the session, as far as the FSM knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// None.
    Down,
    /// An outbound attempt is in progress (we emitted `Connect`).
    Connecting,
    /// A connection is up.
    Up,
}

/// What an entry into Idle does to the restart machinery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    /// A stop: ConnectRetryCounter and damping reset, no automatic restart.
    Stay,
    /// Restart after IdleHold; ConnectRetryCounter unchanged (where the RFC does not count).
    Restart,
    /// Restart after IdleHold; ConnectRetryCounter + 1.
    RestartCounted,
}

/// One BGP session's state machine (see the module documentation).
#[derive(Debug, Clone)]
pub struct Session {
    cfg: SessionConfig,
    open: Open,
    state: State,
    link: Link,
    armed: [bool; 5],
    connect_retry_counter: u32,
    passive_start: bool,
    stable_for: Duration,
    negotiated: Option<Negotiated>,
    last_error: Option<DownReason>,
}

impl Session {
    /// A session in Idle; nothing happens until a start event.
    pub fn new(cfg: SessionConfig) -> Self {
        Session {
            open: local_open(&cfg),
            cfg,
            state: State::Idle,
            link: Link::Down,
            armed: [false; 5],
            connect_retry_counter: 0,
            passive_start: false,
            stable_for: Duration::ZERO,
            negotiated: None,
            last_error: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// What the OPENs agreed, from OpenConfirm until the session goes down.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// Why the connection was last lost (kept across restarts, for display).
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// The OPEN this session sends.
    pub fn local_open(&self) -> &Open {
        &self.open
    }

    /// ConnectRetryCounter: failures since the last manual start/stop or stable period.
    pub fn connect_retry_counter(&self) -> u32 {
        self.connect_retry_counter
    }

    /// DampPeerOscillations: the IdleHold delay of the next automatic restart — the base
    /// [`SessionConfig::idle_hold`], doubled for every counted failure after the first
    /// (ConnectRetryCounter), up to [`IDLE_HOLD_CAP`] (or the base, if larger). Failures the RFC
    /// does not count (an outbound connection refused, a version-error NOTIFICATION) wait the
    /// current delay without growing it.
    pub fn idle_hold_delay(&self) -> Duration {
        let base = self.cfg.idle_hold;
        let doublings = self.connect_retry_counter.saturating_sub(1).min(16);
        base.saturating_mul(1 << doublings)
            .min(IDLE_HOLD_CAP.max(base))
    }

    /// True while a TCP connection is up (from `TcpCrAcked`/`TcpConnectionConfirmed` until
    /// `Disconnect`).
    pub fn is_connected(&self) -> bool {
        self.link == Link::Up
    }

    /// True while the FSM considers `timer` armed.
    pub fn timer_running(&self, timer: Timer) -> bool {
        self.armed[timer.index()]
    }

    /// RFC 4724 §4.2: a new connection from a GR-capable peer while this session is
    /// Established means the peer restarted; the driver should then step
    /// `TcpConnectionFails` on this session (reported as `SessionDown { graceful: true }`)
    /// and run the new connection in a new session, rather than refuse it as §6.8 would.
    pub fn new_connection_supersedes(&self) -> bool {
        self.state == State::Established && self.graceful_applies(&DownReason::TcpFailed)
    }

    /// Feeds one event; returns what to do. Pure: no I/O, clock or randomness.
    pub fn step(&mut self, ev: Event) -> Vec<Output> {
        let from = self.state;
        let mut out = Vec::new();
        if let Event::TimerExpired(timer) = ev {
            if !self.armed[timer.index()] {
                // Stale: disarmed (or never armed) after the driver queued the expiry.
                return out;
            }
            self.armed[timer.index()] = false;
        }
        self.dispatch(ev, &mut out);
        if self.state != from {
            out.push(Output::StateChanged {
                from,
                to: self.state,
            });
        }
        out
    }

    // ===== (state, event) =====

    fn dispatch(&mut self, ev: Event, out: &mut Vec<Output>) {
        use Event as E;
        use State::*;
        match (self.state, ev) {
            // ----- Idle -----
            // Events 1, 4 (ManualStart[_with_PassiveTcpEstablishment]): an operator start also
            // overrides damping.
            (Idle, ev @ (E::ManualStart | E::ManualStartPassive)) => {
                self.forget_damping();
                self.stop_timer(Timer::IdleHold, out);
                self.start(ev == E::ManualStartPassive, out);
            }
            // Events 3, 5 (AutomaticStart[_with_PassiveTcpEstablishment]); while the
            // IdleHoldTimer runs they are events 6, 7 (…_with_DampPeerOscillations): the
            // start waits for IdleHoldTimer_Expires.
            (Idle, ev @ (E::AutomaticStart | E::AutomaticStartPassive)) => {
                let passive = ev == E::AutomaticStartPassive;
                if self.timer_running(Timer::IdleHold) {
                    self.passive_start = passive;
                } else {
                    self.start(passive, out);
                }
            }
            // Event 13 (IdleHoldTimer_Expires): the damped automatic start.
            (Idle, E::TimerExpired(Timer::IdleHold)) => self.start(self.passive_start, out),
            // Event 2 (ManualStop) is ignored by the RFC; here it also cancels a pending
            // automatic restart.
            (Idle, E::ManualStop { .. }) => {
                self.stop_timer(Timer::IdleHold, out);
                self.forget_damping();
            }
            // Idle refuses all incoming connections (and a late outbound one).
            (Idle, E::TcpConnectionConfirmed | E::TcpCrAcked) => out.push(Output::Disconnect),
            // Events 8-12, 18-28: no change.
            (Idle, _) => {}

            // ----- Connect and Active -----
            // Events 1, 3-5: ignored.
            (
                Connect | Active,
                E::ManualStart
                | E::ManualStartPassive
                | E::AutomaticStart
                | E::AutomaticStartPassive,
            ) => {}
            // Event 2 (ManualStop): drop the connection, counter to 0, Idle. With
            // SendNOTIFICATIONwithoutOPEN, a connection waiting on DelayOpen gets the Cease.
            (Connect | Active, E::ManualStop { notification }) => {
                self.go_idle(
                    Some(stop_notification(notification)),
                    DownReason::Stopped,
                    Then::Stay,
                    out,
                );
            }
            // Event 8 (AutomaticStop): "any other event": Idle, counter + 1, damping.
            (Connect | Active, E::AutomaticStop { notification }) => self.close(notification, out),
            // Event 9 (ConnectRetryTimer_Expires) in Connect: drop the attempt, try again.
            (Connect, E::TimerExpired(Timer::ConnectRetry)) => {
                self.drop_link(out);
                self.stop_timer(Timer::DelayOpen, out);
                self.start_timer(Timer::ConnectRetry, self.cfg.connect_retry, out);
                self.connect(out);
            }
            // Event 9 in Active: initiate a connection, go to Connect.
            (Active, E::TimerExpired(Timer::ConnectRetry)) => {
                self.start_timer(Timer::ConnectRetry, self.cfg.connect_retry, out);
                self.connect(out);
                self.state = Connect;
            }
            // Event 12 (DelayOpenTimer_Expires): send our OPEN.
            (Connect | Active, E::TimerExpired(Timer::DelayOpen)) => self.send_open(out),
            // Events 16, 17 (Tcp_CR_Acked, TcpConnectionConfirmed): OPEN now, or DelayOpen.
            (Connect | Active, E::TcpCrAcked | E::TcpConnectionConfirmed) => {
                if self.link == Link::Up {
                    return; // a second connection: the driver's (§6.8)
                }
                self.link = Link::Up;
                self.stop_timer(Timer::ConnectRetry, out);
                match self.cfg.delay_open {
                    Some(delay) => self.start_timer(Timer::DelayOpen, delay, out),
                    None => self.send_open(out),
                }
            }
            // Event 18 (TcpConnectionFails).
            (Connect | Active, E::TcpConnectionFails) => {
                self.transport_lost(DownReason::TcpFailed, out)
            }
            (Connect | Active, E::LivenessDown) => {
                if self.link == Link::Up {
                    self.transport_lost(DownReason::LivenessDown, out);
                }
            }
            // No connection: nothing the message could have come on (stale).
            (Connect | Active, E::MessageReceived(_) | E::MessageError(_))
                if self.link != Link::Up => {}
            // Event 20 (BGPOpen with the DelayOpenTimer running): OPEN and KEEPALIVE, OpenConfirm.
            (Connect | Active, E::MessageReceived(Message::Open(open))) => {
                self.open_received(open, out)
            }
            // Events 24, 25 (NotifMsgVerErr, NotifMsg).
            (Connect | Active, E::MessageReceived(Message::Notification(n))) => {
                self.notification_received(n, out)
            }
            // Events 21, 22 (BGPHeaderErr, BGPOpenMsgErr); 28 is an unexpected message.
            (Connect | Active, E::MessageError(n)) => self.message_error(n, out),
            // Events 26, 27 and ROUTE-REFRESH before the OPEN: unexpected (RFC 6608 subcode 0).
            (
                Connect | Active,
                E::MessageReceived(
                    Message::Keepalive | Message::Update(_) | Message::RouteRefresh { .. },
                ),
            ) => {
                self.fsm_error(out);
            }
            // Event 23 (OpenCollisionDump): "any other event".
            (Connect | Active, E::OpenCollisionDump) => self.close(collision_cease(), out),
            // Events 10, 11, 13 cannot fire (never armed here); informational events.
            (Connect | Active, E::TimerExpired(_) | E::UpdateTreatAsWithdraw) => {}

            // ----- OpenSent, OpenConfirm, Established: common -----
            // Events 1, 3-5: ignored.
            (
                OpenSent | OpenConfirm | Established,
                E::ManualStart
                | E::ManualStartPassive
                | E::AutomaticStart
                | E::AutomaticStartPassive,
            ) => {}
            // Event 2 (ManualStop): Cease, counter to 0, Idle.
            (OpenSent | OpenConfirm | Established, E::ManualStop { notification }) => {
                self.go_idle(
                    Some(stop_notification(notification)),
                    DownReason::Stopped,
                    Then::Stay,
                    out,
                );
            }
            // Event 8 (AutomaticStop): Cease, counter + 1, damping, Idle.
            (OpenSent | OpenConfirm | Established, E::AutomaticStop { notification }) => {
                self.close(notification, out)
            }
            // Event 10 (HoldTimer_Expires): NOTIFICATION 4/0.
            (OpenSent | OpenConfirm | Established, E::TimerExpired(Timer::Hold)) => {
                let n = Notification::new(codes::HOLD_TIMER_EXPIRED, 0);
                self.go_idle(
                    Some(n),
                    DownReason::HoldTimerExpired,
                    Then::RestartCounted,
                    out,
                );
            }
            // Event 11 (KeepaliveTimer_Expires): send KEEPALIVE, rearm.
            (OpenConfirm | Established, E::TimerExpired(Timer::Keepalive)) => {
                self.keepalive_tick(out)
            }
            // Events 14, 16, 17: a second connection, tracked by the driver (§6.8).
            (OpenSent | OpenConfirm | Established, E::TcpCrAcked | E::TcpConnectionConfirmed) => {}
            // Event 18 (TcpConnectionFails), and its BFD twin.
            (OpenSent | OpenConfirm | Established, E::TcpConnectionFails) => {
                self.transport_lost(DownReason::TcpFailed, out)
            }
            (OpenSent | OpenConfirm | Established, E::LivenessDown) => {
                self.transport_lost(DownReason::LivenessDown, out)
            }
            // Events 21, 22, 28.
            (OpenSent | OpenConfirm | Established, E::MessageError(n)) => {
                self.message_error(n, out)
            }
            // Event 23 (OpenCollisionDump): Cease/Connection Collision Resolution.
            (OpenSent | OpenConfirm | Established, E::OpenCollisionDump) => {
                self.close(collision_cease(), out)
            }
            // Events 24, 25 (NotifMsgVerErr, NotifMsg). (OpenSent: the RFC lists NotifMsg with
            // the FSM errors, but a NOTIFICATION is never answered with one.)
            (
                OpenSent | OpenConfirm | Established,
                E::MessageReceived(Message::Notification(n)),
            ) => {
                self.notification_received(n, out);
            }
            (OpenSent | OpenConfirm | Established, E::UpdateTreatAsWithdraw) => {}

            // ----- OpenSent -----
            // Event 19 (BGPOpen): check it, KEEPALIVE, OpenConfirm.
            (OpenSent, E::MessageReceived(Message::Open(open))) => self.open_received(open, out),
            // Events 26, 27, ROUTE-REFRESH: FSM error 5/1 (RFC 6608).
            (
                OpenSent,
                E::MessageReceived(
                    Message::Keepalive | Message::Update(_) | Message::RouteRefresh { .. },
                ),
            ) => {
                self.fsm_error(out);
            }
            // Events 9, 11-13 cannot fire (never armed here).
            (OpenSent, E::TimerExpired(_)) => {}

            // ----- OpenConfirm -----
            // Event 26 (KeepAliveMsg): restart the hold timer, Established.
            (OpenConfirm, E::MessageReceived(Message::Keepalive)) => {
                self.restart_hold(out);
                self.stable_for = Duration::ZERO;
                self.state = Established;
                if let Some(negotiated) = &self.negotiated {
                    out.push(Output::Established(negotiated.clone()));
                }
            }
            // Event 19 on this very connection (a collision is resolved by the driver), 27 and
            // ROUTE-REFRESH: FSM error 5/2.
            (
                OpenConfirm,
                E::MessageReceived(
                    Message::Open(_) | Message::Update(_) | Message::RouteRefresh { .. },
                ),
            ) => {
                self.fsm_error(out);
            }
            // Events 9, 12, 13 cannot fire (never armed here).
            (OpenConfirm, E::TimerExpired(_)) => {}

            // ----- Established -----
            // Event 26 (KeepAliveMsg): restart the hold timer.
            (Established, E::MessageReceived(Message::Keepalive)) => self.restart_hold(out),
            // Event 27 (UpdateMsg): restart the hold timer, hand the UPDATE to the RIB.
            (Established, E::MessageReceived(Message::Update(update))) => {
                self.restart_hold(out);
                out.push(Output::Update(update));
            }
            // ROUTE-REFRESH (RFC 2918): only for a family of the session, when we announced
            // the capability; otherwise ignored (RFC 2918 §4; subtypes 1, 2 are RFC 7313's
            // enhanced refresh, which we do not announce). Proof of life all the same.
            (Established, E::MessageReceived(Message::RouteRefresh { afi, subtype })) => {
                self.restart_hold(out);
                let known = self
                    .negotiated
                    .as_ref()
                    .is_some_and(|n| n.families.contains(&afi));
                if subtype == 0 && known && self.open.capabilities.route_refresh {
                    out.push(Output::RouteRefreshRequested(afi));
                }
            }
            // Event 19 (BGPOpen): FSM error 5/3 (the driver may dump a collision instead).
            (Established, E::MessageReceived(Message::Open(_))) => self.fsm_error(out),
            // Events 9, 12, 13 cannot fire (never armed here).
            (Established, E::TimerExpired(_)) => {}
        }
    }

    // ===== actions =====

    /// From Idle: Connect (arm ConnectRetry, connect) or, passive, Active.
    fn start(&mut self, passive: bool, out: &mut Vec<Output>) {
        self.passive_start = passive;
        if passive || self.cfg.passive {
            if !self.cfg.passive {
                self.start_timer(Timer::ConnectRetry, self.cfg.connect_retry, out);
            }
            self.state = State::Active;
        } else {
            self.start_timer(Timer::ConnectRetry, self.cfg.connect_retry, out);
            self.connect(out);
            self.state = State::Connect;
        }
    }

    fn connect(&mut self, out: &mut Vec<Output>) {
        self.link = Link::Connecting;
        out.push(Output::Connect);
    }

    fn drop_link(&mut self, out: &mut Vec<Output>) {
        if self.link != Link::Down {
            self.link = Link::Down;
            out.push(Output::Disconnect);
        }
    }

    fn send(&mut self, message: Message, out: &mut Vec<Output>) {
        debug_assert_eq!(self.link, Link::Up, "send without a connection");
        out.push(Output::Send(message));
    }

    fn start_timer(&mut self, timer: Timer, after: Duration, out: &mut Vec<Output>) {
        self.armed[timer.index()] = true;
        out.push(Output::StartTimer(timer, after));
    }

    fn stop_timer(&mut self, timer: Timer, out: &mut Vec<Output>) {
        if self.armed[timer.index()] {
            self.armed[timer.index()] = false;
            out.push(Output::StopTimer(timer));
        }
    }

    /// Our OPEN, the hold timer at its large value, OpenSent.
    fn send_open(&mut self, out: &mut Vec<Output>) {
        self.stop_timer(Timer::ConnectRetry, out);
        self.stop_timer(Timer::DelayOpen, out);
        self.send(Message::Open(self.open.clone()), out);
        self.start_timer(Timer::Hold, OPEN_SENT_HOLD_TIME, out);
        self.state = State::OpenSent;
    }

    /// The peer's OPEN in OpenSent (event 19) or while DelayOpen runs (event 20).
    fn open_received(&mut self, peer: Open, out: &mut Vec<Output>) {
        if let Err(n) = check_open(&self.cfg, &peer) {
            self.go_idle(
                Some(n.clone()),
                DownReason::NotificationSent(n),
                Then::RestartCounted,
                out,
            );
            return;
        }
        let negotiated = Negotiated::from_opens(&self.open, &peer);
        self.stop_timer(Timer::ConnectRetry, out);
        self.stop_timer(Timer::DelayOpen, out);
        if self.state != State::OpenSent {
            self.send(Message::Open(self.open.clone()), out);
        }
        self.send(Message::Keepalive, out);
        if negotiated.hold_time == 0 {
            self.stop_timer(Timer::Keepalive, out);
            self.stop_timer(Timer::Hold, out);
        } else {
            self.start_timer(
                Timer::Keepalive,
                keepalive_interval(negotiated.hold_time),
                out,
            );
            self.start_timer(
                Timer::Hold,
                Duration::from_secs(u64::from(negotiated.hold_time)),
                out,
            );
        }
        self.negotiated = Some(negotiated);
        self.state = State::OpenConfirm;
    }

    fn restart_hold(&mut self, out: &mut Vec<Output>) {
        let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        if hold != 0 {
            self.start_timer(Timer::Hold, Duration::from_secs(u64::from(hold)), out);
        }
    }

    fn keepalive_tick(&mut self, out: &mut Vec<Output>) {
        let hold = self.negotiated.as_ref().map_or(0, |n| n.hold_time);
        let period = keepalive_interval(hold);
        self.send(Message::Keepalive, out);
        self.start_timer(Timer::Keepalive, period, out);
        if self.state == State::Established {
            self.stable_for = self.stable_for.saturating_add(period);
            if self.stable_for >= DAMPING_FORGET_AFTER {
                self.forget_damping();
            }
        }
    }

    /// NotifMsgVerErr (24) does not count in OpenSent/OpenConfirm, nor in Connect/Active
    /// while DelayOpen runs; every other NOTIFICATION (25) does.
    fn notification_received(&mut self, n: Notification, out: &mut Vec<Output>) {
        let version_error = n.code == codes::OPEN && n.subcode == codes::OPEN_UNSUPPORTED_VERSION;
        let uncounted = version_error
            && match self.state {
                State::OpenSent | State::OpenConfirm => true,
                State::Connect | State::Active => self.timer_running(Timer::DelayOpen),
                _ => false,
            };
        let then = if uncounted {
            Then::Restart
        } else {
            Then::RestartCounted
        };
        self.go_idle(None, DownReason::NotificationReceived(n), then, out);
    }

    /// The codec's verdict: BGPHeaderErr (21) is sent in every state (§6.1); BGPOpenMsgErr
    /// (22) before Established; UpdateMsgErr (28) in Established. Elsewhere the message was
    /// unexpected, which is an FSM error (RFC 6608).
    fn message_error(&mut self, n: Notification, out: &mut Vec<Output>) {
        let expected = match n.code {
            codes::HEADER => true,
            codes::OPEN => self.state != State::Established,
            _ => self.state == State::Established,
        };
        if expected {
            self.go_idle(
                Some(n.clone()),
                DownReason::NotificationSent(n),
                Then::RestartCounted,
                out,
            );
        } else {
            self.fsm_error(out);
        }
    }

    /// RFC 6608: Finite State Machine Error, subcode 1 OpenSent, 2 OpenConfirm,
    /// 3 Established, 0 (unspecified) elsewhere.
    fn fsm_error(&mut self, out: &mut Vec<Output>) {
        let subcode = match self.state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            State::Established => 3,
            _ => 0,
        };
        let n = Notification::new(codes::FSM, subcode);
        self.go_idle(
            Some(n.clone()),
            DownReason::NotificationSent(n),
            Then::RestartCounted,
            out,
        );
    }

    /// AutomaticStop and OpenCollisionDump: send `n` if connected, counter + 1, damping, Idle.
    fn close(&mut self, n: Notification, out: &mut Vec<Output>) {
        let reason = if self.link == Link::Up {
            DownReason::NotificationSent(n.clone())
        } else {
            DownReason::Stopped
        };
        self.go_idle(Some(n), reason, Then::RestartCounted, out);
    }

    /// TcpConnectionFails (18), or liveness down, as the RFC has it per state.
    fn transport_lost(&mut self, reason: DownReason, out: &mut Vec<Output>) {
        match self.state {
            State::Idle => {}
            // Connect with DelayOpen running, OpenSent: back to listening in Active.
            State::Connect if self.timer_running(Timer::DelayOpen) => {
                self.back_to_active(reason, out)
            }
            State::OpenSent => self.back_to_active(reason, out),
            // Connect otherwise: Idle, not counted.
            State::Connect => self.go_idle(None, reason, Then::Restart, out),
            State::Active | State::OpenConfirm | State::Established => {
                self.go_idle(None, reason, Then::RestartCounted, out)
            }
        }
    }

    /// Close the connection, rearm ConnectRetry (unless passive), listen in Active.
    fn back_to_active(&mut self, reason: DownReason, out: &mut Vec<Output>) {
        self.drop_link(out);
        for timer in Timer::ALL {
            self.stop_timer(timer, out);
        }
        if !self.cfg.passive {
            self.start_timer(Timer::ConnectRetry, self.cfg.connect_retry, out);
        }
        self.negotiated = None;
        self.last_error = Some(reason);
        self.state = State::Active;
    }

    /// To Idle: NOTIFICATION (if connected), close, disarm timers, report the loss of an
    /// Established session, then arm IdleHold for the automatic restart (unless stopped).
    fn go_idle(
        &mut self,
        notification: Option<Notification>,
        reason: DownReason,
        then: Then,
        out: &mut Vec<Output>,
    ) {
        if let Some(n) = notification
            && self.link == Link::Up
        {
            self.send(Message::Notification(n), out);
        }
        self.drop_link(out);
        for timer in Timer::ALL {
            self.stop_timer(timer, out);
        }
        if self.state == State::Established {
            let graceful = self.graceful_applies(&reason);
            out.push(Output::SessionDown {
                reason: reason.clone(),
                graceful,
            });
        }
        self.negotiated = None;
        self.last_error = Some(reason);
        match then {
            Then::Stay => self.forget_damping(),
            Then::Restart => self.schedule_restart(out),
            Then::RestartCounted => {
                self.connect_retry_counter = self.connect_retry_counter.saturating_add(1);
                self.schedule_restart(out);
            }
        }
        self.state = State::Idle;
    }

    fn schedule_restart(&mut self, out: &mut Vec<Output>) {
        self.start_timer(Timer::IdleHold, self.idle_hold_delay(), out);
    }

    fn forget_damping(&mut self) {
        self.connect_retry_counter = 0;
    }

    /// RFC 4724 receiving speaker: we do GR, the peer announced GR for at least one family,
    /// and the TCP session ended without a NOTIFICATION (a restarting peer's process went
    /// away). Hold-timer expiry sends 4/0, so it is not graceful: RFC 4724 does not apply once
    /// a NOTIFICATION is exchanged (RFC 8538 §1), and a peer that stopped answering is dead,
    /// not restarting — its routes go at once, so that a failed node is routed around within
    /// the hold time. RFC 8538 is not implemented.
    fn graceful_applies(&self, reason: &DownReason) -> bool {
        let lost = matches!(reason, DownReason::TcpFailed | DownReason::LivenessDown);
        let peer_gr = self
            .negotiated
            .as_ref()
            .and_then(|n| n.peer_graceful_restart.as_ref())
            .is_some_and(|gr| !gr.families.is_empty());
        self.cfg.graceful_restart && lost && peer_gr
    }
}

fn stop_notification(notification: Option<Notification>) -> Notification {
    notification.unwrap_or_else(|| Notification::new(codes::CEASE, codes::CEASE_ADMIN_SHUTDOWN))
}

fn collision_cease() -> Notification {
    Notification::new(codes::CEASE, codes::CEASE_COLLISION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_open_uses_as_trans_and_four_octet_capability() {
        let mut cfg = SessionConfig::new(4_200_000_000, Ipv4Addr::new(10, 0, 0, 1), None);
        cfg.capabilities.four_octet_as = None;
        cfg.hold_time = 2;
        let open = local_open(&cfg);
        assert_eq!(open.my_as, AS_TRANS);
        assert_eq!(open.capabilities.four_octet_as, Some(4_200_000_000));
        assert_eq!(open.asn(), 4_200_000_000);
        assert_eq!(open.hold_time, 3);

        let cfg = SessionConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1), None);
        let open = local_open(&cfg);
        assert_eq!((open.my_as, open.version, open.hold_time), (64512, 4, 90));
    }

    #[test]
    fn keepalive_is_a_third_of_hold() {
        assert_eq!(keepalive_interval(90), Duration::from_secs(30));
        assert_eq!(keepalive_interval(3), Duration::from_secs(1));
        assert_eq!(
            keepalive_interval(4),
            Duration::from_millis(1333) + Duration::from_nanos(333_333)
        );
        assert_eq!(keepalive_interval(0), Duration::ZERO);
    }

    #[test]
    fn idle_hold_doubles_with_the_counter_to_the_cap() {
        let delays = |base: u64| -> Vec<u64> {
            let mut cfg = SessionConfig::new(64512, Ipv4Addr::new(10, 0, 0, 1), None);
            cfg.idle_hold = Duration::from_secs(base);
            let mut s = Session::new(cfg);
            (0..8)
                .map(|n| {
                    s.connect_retry_counter = n;
                    s.idle_hold_delay().as_secs()
                })
                .collect()
        };
        assert_eq!(delays(5), [5, 5, 10, 20, 30, 30, 30, 30]);
        assert_eq!(delays(1), [1, 1, 2, 4, 8, 16, 30, 30]);
        assert_eq!(delays(60), [60; 8], "a base above the cap is kept");
        assert_eq!(delays(0), [0; 8]);
        let mut s = Session::new(SessionConfig::new(1, Ipv4Addr::new(10, 0, 0, 1), None));
        s.connect_retry_counter = u32::MAX;
        assert_eq!(s.idle_hold_delay(), IDLE_HOLD_CAP);
    }

    #[test]
    fn timer_index_matches_all() {
        for (i, t) in Timer::ALL.into_iter().enumerate() {
            assert_eq!(t.index(), i);
        }
    }
}
