//! Replayed-event conformance tests, in the style of holo's: every directory under
//! `tests/fsm_replay/` is a scenario with
//!
//! * `config.json` (optional): overrides of the session configuration (see [`config`]);
//! * `events.jsonl`: one event per line (see [`event`]); `{"comment": "..."}` lines are skipped;
//! * `outputs.jsonl`: the expected result, per step `{"step":N,"out":"<Output, Debug>"}` lines
//!   followed by `{"step":N,"state":"<State>"}`.
//!
//! `TORTIE_UPDATE_GOLDEN=1 cargo test -p tortie-bgpd --test fsm_replay` rewrites the
//! `outputs.jsonl` files from the current FSM (review the diff before keeping it).
//!
//! No serde_json in the dev-dependencies: a minimal JSON reader is below.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use tortie_bgpd::fsm::{Event, Session, SessionConfig, Timer};
use tortie_bgpd::{
    Afi, AsSegment, Capabilities, GracefulRestart, Message, Nlri, Notification, Open, PathAttrs,
    Update,
};

// ===== scenarios =====

#[test]
fn replay_scenarios() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fsm_replay");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fsm_replay")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "scenarios: {dirs:?}");
    let update = std::env::var_os("TORTIE_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let got = run(dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        let golden = dir.join("outputs.jsonl");
        if update {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != got {
            failures.push(format!("{name}:\n{}", first_difference(&want, &got)));
        }
    }
    assert!(
        failures.is_empty(),
        "replay mismatch (TORTIE_UPDATE_GOLDEN=1 regenerates):\n{}",
        failures.join("\n")
    );
}

fn run(dir: &Path) -> Result<String, String> {
    let cfg = match std::fs::read_to_string(dir.join("config.json")) {
        Ok(text) => config(&parse(&text)?)?,
        Err(_) => config(&Json::Object(BTreeMap::new()))?,
    };
    let events = std::fs::read_to_string(dir.join("events.jsonl")).map_err(|e| e.to_string())?;
    let mut session = Session::new(cfg);
    let mut out = String::new();
    let mut step = 0;
    for (n, line) in events.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value = parse(line).map_err(|e| format!("events.jsonl:{}: {e}", n + 1))?;
        if value.get("comment").is_some() {
            continue;
        }
        let ev = event(&value).map_err(|e| format!("events.jsonl:{}: {e}", n + 1))?;
        step += 1;
        for o in session.step(ev) {
            writeln!(
                out,
                "{{\"step\":{step},\"out\":{}}}",
                quote(&format!("{o:?}"))
            )
            .unwrap();
        }
        writeln!(
            out,
            "{{\"step\":{step},\"state\":\"{:?}\"}}",
            session.state()
        )
        .unwrap();
    }
    Ok(out)
}

fn first_difference(want: &str, got: &str) -> String {
    let (w, g): (Vec<_>, Vec<_>) = (want.lines().collect(), got.lines().collect());
    for i in 0..w.len().max(g.len()) {
        let (a, b) = (w.get(i), g.get(i));
        if a != b {
            return format!(
                "  line {}:\n  - {}\n  + {}",
                i + 1,
                a.unwrap_or(&"<none>"),
                b.unwrap_or(&"<none>")
            );
        }
    }
    String::new()
}

fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c if (c as u32) < 0x20 => write!(q, "\\u{:04x}", c as u32).unwrap(),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

// ===== the event and configuration vocabulary =====

/// Keys: `local_as`, `local_id`, `peer_as` (null: any), `hold_time`, `min_hold_time`,
/// `connect_retry_ms`, `idle_hold_ms`, `delay_open_ms`, `passive`, `graceful_restart`,
/// `families` (["ipv4", "ipv6"]), `gr_restart_time` (our GR capability).
fn config(v: &Json) -> Result<SessionConfig, String> {
    let local_as = v.u64_or("local_as", 64512)? as u32;
    let local_id = v.ip_or("local_id", Ipv4Addr::new(10, 0, 0, 1))?;
    let peer_as = match v.get("peer_as") {
        Some(Json::Null) => None,
        Some(x) => Some(x.as_u64()? as u32),
        None => Some(local_as),
    };
    let mut c = SessionConfig::new(local_as, local_id, peer_as);
    c.hold_time = v.u64_or("hold_time", 90)? as u16;
    c.min_hold_time = v.u64_or("min_hold_time", 3)? as u16;
    c.connect_retry = Duration::from_millis(v.u64_or("connect_retry_ms", 5000)?);
    c.idle_hold = Duration::from_millis(v.u64_or("idle_hold_ms", 5000)?);
    c.delay_open = v
        .get("delay_open_ms")
        .map(|x| x.as_u64().map(Duration::from_millis))
        .transpose()?;
    c.passive = v.bool_or("passive", false)?;
    c.graceful_restart = v.bool_or("graceful_restart", true)?;
    c.capabilities.multiprotocol = v
        .families_or("families", &[Afi::Ipv4])?
        .into_iter()
        .collect();
    if let Some(t) = v.get("gr_restart_time") {
        c.capabilities.graceful_restart = Some(gr(
            t.as_u64()? as u16,
            &c.capabilities
                .multiprotocol
                .iter()
                .copied()
                .collect::<Vec<_>>(),
        ));
    }
    Ok(c)
}

fn gr(restart_time: u16, families: &[Afi]) -> GracefulRestart {
    GracefulRestart {
        restarting: false,
        restart_time,
        families: families.iter().map(|a| (*a, true)).collect(),
    }
}

/// `{"event": NAME, ...}`: the `fsm::Event` names, plus the received messages `Open`,
/// `Keepalive`, `Update`, `Notification`, `RouteRefresh` (each `MessageReceived`).
fn event(v: &Json) -> Result<Event, String> {
    let name = v.get("event").ok_or("no \"event\"")?.as_str()?;
    Ok(match name {
        "ManualStart" => Event::ManualStart,
        "ManualStartPassive" => Event::ManualStartPassive,
        "AutomaticStart" => Event::AutomaticStart,
        "AutomaticStartPassive" => Event::AutomaticStartPassive,
        "ManualStop" => Event::ManualStop {
            notification: notification_opt(v)?,
        },
        "AutomaticStop" => Event::AutomaticStop {
            notification: notification_opt(v)?.ok_or("AutomaticStop needs code/subcode")?,
        },
        "TimerExpired" => Event::TimerExpired(timer(v.get("timer").ok_or("no timer")?.as_str()?)?),
        "TcpConnectionConfirmed" => Event::TcpConnectionConfirmed,
        "TcpCrAcked" => Event::TcpCrAcked,
        "TcpConnectionFails" => Event::TcpConnectionFails,
        "OpenCollisionDump" => Event::OpenCollisionDump,
        "UpdateTreatAsWithdraw" => Event::UpdateTreatAsWithdraw,
        "LivenessDown" => Event::LivenessDown,
        "MessageError" => {
            Event::MessageError(notification_opt(v)?.ok_or("MessageError needs code/subcode")?)
        }
        "Keepalive" => Event::MessageReceived(Message::Keepalive),
        "Notification" => Event::MessageReceived(Message::Notification(
            notification_opt(v)?.ok_or("code/subcode")?,
        )),
        "RouteRefresh" => Event::MessageReceived(Message::RouteRefresh {
            afi: afi(v.get("afi").map_or(Ok("ipv4"), Json::as_str)?)?,
            subtype: v.u64_or("subtype", 0)? as u8,
        }),
        "Open" => Event::MessageReceived(Message::Open(open(v)?)),
        "Update" => Event::MessageReceived(Message::Update(update(v)?)),
        other => return Err(format!("unknown event {other:?}")),
    })
}

/// `shutdown` (RFC 8203 text; Cease/2), or `code`/`subcode`; none: `None`.
fn notification_opt(v: &Json) -> Result<Option<Notification>, String> {
    if let Some(text) = v.get("shutdown") {
        return Ok(Some(Notification::admin_shutdown(text.as_str()?)));
    }
    match (v.get("code"), v.get("subcode")) {
        (Some(c), Some(s)) => Ok(Some(Notification::new(
            c.as_u64()? as u8,
            s.as_u64()? as u8,
        ))),
        (None, None) => Ok(None),
        _ => Err("code and subcode go together".into()),
    }
}

/// `as` (≤ 65535 in `my_as`, always in the 4-octet capability), `hold`, `id`, `version`,
/// `families`, `route_refresh`, `gr_restart_time` (+ `gr_families`).
fn open(v: &Json) -> Result<Open, String> {
    let asn = v.u64_or("as", 64512)? as u32;
    let families = v.families_or("families", &[Afi::Ipv4])?;
    let graceful_restart = match v.get("gr_restart_time") {
        Some(t) => Some(gr(
            t.as_u64()? as u16,
            &v.families_or("gr_families", &families)?,
        )),
        None => None,
    };
    Ok(Open {
        version: v.u64_or("version", 4)? as u8,
        my_as: u16::try_from(asn).unwrap_or(23456),
        hold_time: v.u64_or("hold", 90)? as u16,
        bgp_id: v.ip_or("id", Ipv4Addr::new(10, 0, 0, 2))?,
        capabilities: Capabilities {
            multiprotocol: families.into_iter().collect(),
            route_refresh: v.bool_or("route_refresh", true)?,
            four_octet_as: Some(asn),
            graceful_restart,
            ..Capabilities::default()
        },
    })
}

/// `announce`, `withdraw` (prefix lists), `next_hop`, `as_path` (one AS_SEQUENCE), `eor`.
fn update(v: &Json) -> Result<Update, String> {
    let prefixes = |key: &str| -> Result<Vec<Nlri>, String> {
        match v.get(key) {
            None => Ok(Vec::new()),
            Some(list) => list
                .as_array()?
                .iter()
                .map(|p| {
                    p.as_str()?
                        .parse::<IpNet>()
                        .map(Nlri::new)
                        .map_err(|e| e.to_string())
                })
                .collect(),
        }
    };
    let announced = prefixes("announce")?;
    let attrs = if announced.is_empty() {
        None
    } else {
        let as_path = match v.get("as_path") {
            Some(list) => vec![AsSegment::Sequence(
                list.as_array()?
                    .iter()
                    .map(|a| a.as_u64().map(|a| a as u32))
                    .collect::<Result<_, _>>()?,
            )],
            None => Vec::new(),
        };
        Some(PathAttrs {
            next_hop: Some(v.ip_or("next_hop", Ipv4Addr::new(10, 0, 0, 2))?.into()),
            as_path,
            local_pref: Some(100),
            ..PathAttrs::default()
        })
    };
    Ok(Update {
        withdrawn: prefixes("withdraw")?,
        attrs,
        announced,
        end_of_rib: v.get("eor").map(|a| a.as_str().and_then(afi)).transpose()?,
        treat_as_withdraw: None,
    })
}

fn timer(name: &str) -> Result<Timer, String> {
    Timer::ALL
        .into_iter()
        .find(|t| format!("{t:?}") == name)
        .ok_or_else(|| format!("unknown timer {name:?}"))
}

fn afi(name: &str) -> Result<Afi, String> {
    match name {
        "ipv4" => Ok(Afi::Ipv4),
        "ipv6" => Ok(Afi::Ipv6),
        other => Err(format!("unknown family {other:?}")),
    }
}

// ===== a minimal JSON reader =====

#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(m) => m.get(key),
            _ => None,
        }
    }

    fn as_str(&self) -> Result<&str, String> {
        match self {
            Json::String(s) => Ok(s),
            other => Err(format!("expected a string, got {other:?}")),
        }
    }

    fn as_u64(&self) -> Result<u64, String> {
        match self {
            Json::Number(n) if *n >= 0.0 && n.fract() == 0.0 && *n <= u64::MAX as f64 => {
                Ok(*n as u64)
            }
            other => Err(format!("expected an unsigned integer, got {other:?}")),
        }
    }

    fn as_array(&self) -> Result<&[Json], String> {
        match self {
            Json::Array(a) => Ok(a),
            other => Err(format!("expected an array, got {other:?}")),
        }
    }

    fn u64_or(&self, key: &str, default: u64) -> Result<u64, String> {
        self.get(key).map_or(Ok(default), Json::as_u64)
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, String> {
        match self.get(key) {
            None => Ok(default),
            Some(Json::Bool(b)) => Ok(*b),
            Some(other) => Err(format!("{key}: expected a boolean, got {other:?}")),
        }
    }

    fn ip_or(&self, key: &str, default: Ipv4Addr) -> Result<Ipv4Addr, String> {
        self.get(key).map_or(Ok(default), |v| {
            v.as_str()?.parse().map_err(|e| format!("{key}: {e}"))
        })
    }

    fn families_or(&self, key: &str, default: &[Afi]) -> Result<Vec<Afi>, String> {
        match self.get(key) {
            None => Ok(default.to_vec()),
            Some(v) => v.as_array()?.iter().map(|a| afi(a.as_str()?)).collect(),
        }
    }
}

fn parse(text: &str) -> Result<Json, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(format!("trailing input at {}", p.i));
    }
    Ok(v)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), String> {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.i))
        }
    }

    fn literal(&mut self, word: &str, v: Json) -> Result<Json, String> {
        if self.s[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(v)
        } else {
            Err(format!("bad literal at {}", self.i))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s.get(self.i) == Some(&b'}') {
                    self.i += 1;
                    return Ok(Json::Object(m));
                }
                loop {
                    self.ws();
                    let k = self.string()?;
                    self.eat(b':')?;
                    m.insert(k, self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b'}') => {
                            self.i += 1;
                            return Ok(Json::Object(m));
                        }
                        _ => return Err(format!("expected , or }} at {}", self.i)),
                    }
                }
            }
            Some(b'[') => {
                self.i += 1;
                let mut a = Vec::new();
                self.ws();
                if self.s.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(Json::Array(a));
                }
                loop {
                    a.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Json::Array(a));
                        }
                        _ => return Err(format!("expected , or ] at {}", self.i)),
                    }
                }
            }
            Some(b'"') => Ok(Json::String(self.string()?)),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(c) if *c == b'-' || c.is_ascii_digit() => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                text.parse()
                    .map(Json::Number)
                    .map_err(|e| format!("{text}: {e}"))
            }
            _ => Err(format!("unexpected input at {}", self.i)),
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.eat(b'"')?;
        let mut bytes = Vec::new();
        loop {
            let c = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => return String::from_utf8(bytes).map_err(|e| e.to_string()),
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
                            self.i += 4;
                            let code = u32::from_str_radix(
                                std::str::from_utf8(hex).map_err(|e| e.to_string())?,
                                16,
                            )
                            .map_err(|e| e.to_string())?;
                            char::from_u32(code)
                                .ok_or("\\u escape: not a scalar value (surrogates unsupported)")?
                        }
                        other => return Err(format!("bad escape \\{}", other as char)),
                    };
                    let mut buf = [0; 4];
                    bytes.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c => bytes.push(c),
            }
        }
    }
}

#[test]
fn json_reader() {
    let v = parse(r#" {"a": [1, 2.5, -3], "b": "x\"y\u00e9\n", "c": true, "d": null, "e": {}} "#)
        .unwrap();
    assert_eq!(v.get("a").unwrap().as_array().unwrap().len(), 3);
    assert_eq!(v.get("b").unwrap().as_str().unwrap(), "x\"yé\n");
    assert_eq!(v.get("c"), Some(&Json::Bool(true)));
    assert_eq!(v.get("d"), Some(&Json::Null));
    assert_eq!(v.get("e"), Some(&Json::Object(BTreeMap::new())));
    assert!(parse("{\"a\": 1,}").is_err());
    assert!(parse("[1 2]").is_err());
    assert_eq!(
        parse(&quote("a\"b\\c\u{1}")).unwrap(),
        Json::String("a\"b\\c\u{1}".into())
    );
}
