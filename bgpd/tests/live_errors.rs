//! Malformed input over a live TCP session: a raw peer (this test binary re-run inside a
//! namespace as the ignored `raw_peer` helper) connects to `tortie-bgpd`, sends crafted bytes and
//! reads what comes back. Each case checks the exact NOTIFICATION (code, subcode, data) the
//! daemon sends, or, for RFC 7606 treat-as-withdraw, that the route is gone and the session is
//! still up. The codec-level table (`wire_malformed.rs`) covers every row; this proves the
//! driver carries those outcomes onto the wire.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Lab, Ns, control, tortie_bgpd, wait_for};

const MARKER: &str = "ffffffffffffffffffffffffffffffff";
const TORTIE: &str = "198.18.9.1";
const TORTIE_AS: u32 = 64512;
const PEER_AS: u16 = 65009;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn tohex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A whole message from its type and body (hex).
fn msg(kind: u8, body: &str) -> String {
    let body = unhex(body);
    format!("{MARKER}{:04x}{kind:02x}{}", 19 + body.len(), tohex(&body))
}

/// OPEN with our usual capabilities (IPv4 unicast, 4-octet AS) unless `params` says otherwise.
fn open(version: u8, asn: u16, hold: u16, id: [u8; 4], params: Option<&str>) -> String {
    let caps = format!("0206 01040001 0001 0206 4104 {:08x}", u32::from(asn));
    let params = unhex(params.unwrap_or(&caps));
    msg(
        1,
        &format!(
            "{version:02x}{asn:04x}{hold:04x}{}{:02x}{}",
            tohex(&id),
            params.len(),
            tohex(&params)
        ),
    )
}

fn keepalive() -> String {
    msg(4, "")
}

/// An UPDATE from its attributes and NLRI (hex).
fn update(attrs: &str, nlri: &str) -> String {
    let a = unhex(attrs);
    msg(
        2,
        &format!("0000{:04x}{}{}", a.len(), tohex(&a), nlri.replace(' ', "")),
    )
}

/// ORIGIN IGP, AS_PATH [65009] (4-octet), NEXT_HOP `nh`.
fn good_attrs(nh: [u8; 4]) -> String {
    format!(
        "40010100 400206 0201 {:08x} 400304 {}",
        u32::from(PEER_AS),
        tohex(&nh)
    )
}

const PREFIX: &str = "10.9.1.0/24";
const PREFIX_NLRI: &str = "18 0a0901";

// ---- the raw peer, run inside the peer namespace ----

/// Reads commands on stdin, one per line, and answers on stdout with `raw:`-prefixed lines:
/// `connect LOCAL REMOTE`, `send HEX`, `read MS` (frames received within MS ms, then `raw: done`).
#[test]
#[ignore = "helper: started by the other tests inside a namespace"]
fn raw_peer() {
    let stdin = std::io::stdin();
    let mut stream: Option<TcpStream> = None;
    let mut pending: Vec<u8> = Vec::new();
    for line in stdin.lock().lines() {
        let line = line.expect("stdin");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("connect") => {
                let local: std::net::IpAddr = words.next().unwrap().parse().unwrap();
                let remote: SocketAddr = words.next().unwrap().parse().unwrap();
                let sock = socket2::Socket::new(
                    socket2::Domain::IPV4,
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )
                .unwrap();
                sock.bind(&SocketAddr::new(local, 0).into()).unwrap();
                match sock.connect_timeout(&remote.into(), Duration::from_secs(5)) {
                    Ok(()) => {
                        stream = Some(sock.into());
                        pending.clear();
                        println!("raw: connected");
                    }
                    Err(e) => println!("raw: error {e}"),
                }
            }
            Some("send") => {
                let bytes = unhex(words.next().unwrap());
                let ok = stream.as_mut().is_some_and(|s| s.write_all(&bytes).is_ok());
                println!("raw: {}", if ok { "sent" } else { "error send" });
            }
            Some("read") => {
                let ms: u64 = words.next().unwrap().parse().unwrap();
                let deadline = Instant::now() + Duration::from_millis(ms);
                let mut eof = false;
                if let Some(s) = stream.as_mut() {
                    let mut buf = [0u8; 4096];
                    while Instant::now() < deadline {
                        s.set_read_timeout(Some(
                            deadline
                                .saturating_duration_since(Instant::now())
                                .max(Duration::from_millis(1)),
                        ))
                        .unwrap();
                        match s.read(&mut buf) {
                            Ok(0) => {
                                eof = true;
                                break;
                            }
                            Ok(n) => pending.extend_from_slice(&buf[..n]),
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => {
                                eof = true;
                                break;
                            }
                        }
                    }
                }
                while pending.len() >= 19 {
                    let len = usize::from(u16::from_be_bytes([pending[16], pending[17]]));
                    if len < 19 || pending.len() < len {
                        break;
                    }
                    let frame: Vec<u8> = pending.drain(..len).collect();
                    println!("raw: recv {}", tohex(&frame));
                }
                if eof {
                    println!("raw: eof");
                }
                println!("raw: done");
            }
            _ => println!("raw: error unknown command {line:?}"),
        }
        std::io::stdout().flush().unwrap();
    }
}

// ---- the driver side ----

struct RawPeer {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl RawPeer {
    fn start(ns: &Ns) -> RawPeer {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(exe)
            .args([
                "raw_peer",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("raw peer");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        RawPeer {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one command; returns its `raw:` answer lines (up to `done` for reads).
    fn cmd(&mut self, line: &str) -> Vec<String> {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let is_read = line.starts_with("read");
        let mut out = Vec::new();
        loop {
            let mut l = String::new();
            assert!(
                self.stdout.read_line(&mut l).unwrap() > 0,
                "raw peer exited"
            );
            // The harness prints "test raw_peer ... " without a newline before our first line.
            let Some(at) = l.find("raw: ") else {
                continue; // the test harness's own lines
            };
            let answer = l[at + 5..].trim_end();
            if !is_read || answer == "done" {
                if !is_read {
                    out.push(answer.to_string());
                }
                return out;
            }
            out.push(answer.to_string());
        }
    }

    fn connect(&mut self, local: &str) {
        let r = self.cmd(&format!("connect {local} {TORTIE}:179"));
        assert_eq!(r, ["connected"], "connect from {local}");
    }

    fn send(&mut self, hex: &str) {
        let hex: String = hex.chars().filter(|c| !c.is_whitespace()).collect();
        assert_eq!(self.cmd(&format!("send {hex}")), ["sent"]);
    }

    /// Frames (hex) received within `ms`, and whether the connection closed.
    fn read(&mut self, ms: u64) -> (Vec<Vec<u8>>, bool) {
        let lines = self.cmd(&format!("read {ms}"));
        let frames = lines
            .iter()
            .filter_map(|l| l.strip_prefix("recv "))
            .map(unhex)
            .collect();
        (frames, lines.iter().any(|l| l == "eof"))
    }

    /// Reads until a NOTIFICATION arrives (or `ms` pass); returns (code, subcode, data).
    fn notification(&mut self, ms: u64) -> Option<(u8, u8, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < deadline {
            let (frames, eof) = self.read(250);
            if let Some(f) = frames.iter().find(|f| f[18] == 3) {
                return Some((f[19], f[20], f[21..].to_vec()));
            }
            if eof {
                return None;
            }
        }
        None
    }

    /// OPEN + KEEPALIVE from us, theirs back: the session is Established on both sides.
    fn establish(&mut self, local: &str, id: [u8; 4], hold: u16) {
        self.connect(local);
        self.send(&open(4, PEER_AS, hold, id, None));
        let mut got_open = false;
        let deadline = Instant::now() + Duration::from_secs(10);
        while !got_open && Instant::now() < deadline {
            let (frames, eof) = self.read(250);
            assert!(!eof, "tortie closed during OPEN exchange");
            got_open = frames.iter().any(|f| f[18] == 1);
        }
        assert!(got_open, "no OPEN from tortie");
        self.send(&keepalive());
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Setup {
    lab: Lab,
    peer_ns: Ns,
    control: std::path::PathBuf,
}

/// tortie-bgpd in one namespace, passive towards `peers` (198.18.9.<n>) in another.
fn setup(peers: &[u8]) -> Setup {
    let mut lab = Lab::new();
    let (t, p) = (lab.ns("t"), lab.ns("p"));
    let addrs: Vec<String> = peers.iter().map(|n| format!("198.18.9.{n}/24")).collect();
    let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    lab.link(&t, &[&format!("{TORTIE}/24")], &p, &addr_refs);
    let mut conf = format!(
        "[speaker]\nasn = {TORTIE_AS}\nrouter_id = \"{TORTIE}\"\nlisten = [\"0.0.0.0:179\"]\ngraceful_restart_time = 0\n"
    );
    for n in peers {
        conf.push_str(&format!(
            "\n[[peer]]\naddress = \"198.18.9.{n}\"\nasn = {PEER_AS}\npassive = true\nfamilies = [\"ipv4\"]\n"
        ));
    }
    let conf_path = lab.write("t.toml", &conf);
    let control = lab.path("t.sock");
    lab.spawn(
        &t,
        &[
            tortie_bgpd(),
            "--config",
            conf_path.to_str().unwrap(),
            "--control",
            control.to_str().unwrap(),
        ],
        "tortie.log",
    );
    wait_for(Duration::from_secs(10), "control socket", || {
        control.exists().then_some(())
    });
    Setup {
        lab,
        peer_ns: p,
        control,
    }
}

fn state(control_path: &std::path::Path, peer: &str) -> Option<String> {
    control(control_path, "status")?
        .as_array()?
        .iter()
        .find(|p| p["address"] == peer)
        .and_then(|p| p["state"].as_str().map(str::to_string))
}

fn has_route(control_path: &std::path::Path, prefix: &str) -> bool {
    control(control_path, "routes")
        .and_then(|v| v.as_array().cloned())
        .is_some_and(|a| a.iter().any(|r| r["prefix"] == prefix))
}

#[test]
fn header_and_open_errors_get_the_exact_notification() {
    // One peer address per case: a session reset starts the daemon's idle-hold damping for
    // that peer, so cases do not wait on each other.
    /// (name, bytes sent as the first message, (code, subcode), data if the RFC fixes it)
    type Case = (&'static str, String, (u8, u8), Option<&'static str>);
    let cases: Vec<Case> = vec![
        (
            "bad marker",
            format!("{}fe 0013 04", &MARKER[..30]),
            (1, 1),
            None,
        ),
        (
            "length 18",
            format!("{MARKER}0012 04"),
            (1, 2),
            Some("0012"),
        ),
        ("type 7", format!("{MARKER}0013 07"), (1, 3), Some("07")),
        (
            "KEEPALIVE of length 20",
            format!("{MARKER}0014 04 00"),
            (1, 2),
            Some("0014"),
        ),
        (
            "OPEN version 3",
            open(3, PEER_AS, 90, [198, 18, 9, 13], None),
            (2, 1),
            Some("0004"),
        ),
        (
            "OPEN from the wrong AS",
            open(4, 65099, 90, [198, 18, 9, 14], None),
            (2, 2),
            None,
        ),
        (
            "OPEN with BGP identifier 0.0.0.0",
            open(4, PEER_AS, 90, [0, 0, 0, 0], None),
            (2, 3),
            None,
        ),
        (
            "OPEN with an unknown optional parameter",
            open(4, PEER_AS, 90, [198, 18, 9, 16], Some("0901ff")),
            (2, 4),
            None,
        ),
        (
            "OPEN with hold time 2",
            open(4, PEER_AS, 2, [198, 18, 9, 17], None),
            (2, 6),
            None,
        ),
        (
            "OPEN whose 4-octet AS capability disagrees with My AS",
            open(
                4,
                PEER_AS,
                90,
                [198, 18, 9, 18],
                Some("0206 01040001 0001 0206 4104 0000fde8"),
            ),
            (2, 2),
            None,
        ),
    ];
    let peers: Vec<u8> = (10..10 + cases.len() as u8).collect();
    let s = setup(&peers);
    let mut raw = RawPeer::start(&s.peer_ns);
    for ((name, bytes, (code, sub), data), n) in cases.iter().zip(&peers) {
        raw.connect(&format!("198.18.9.{n}"));
        raw.send(bytes);
        let got = raw.notification(5000);
        let Some((c, sc, d)) = got else {
            panic!("{name}: no NOTIFICATION\n{}", s.lab.log("tortie.log"));
        };
        assert_eq!((c, sc), (*code, *sub), "{name}: data {}", tohex(&d));
        if let Some(want) = data {
            assert_eq!(tohex(&d), *want, "{name}: data");
        }
        // The daemon records what it sent.
        let status = control(&s.control, "status").unwrap();
        let me = status
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"] == format!("198.18.9.{n}"))
            .unwrap()
            .clone();
        assert_eq!(me["state"], "Idle", "{name}: {me}");
    }
}

#[test]
fn update_errors_reset_or_withdraw_as_rfc_7606_says() {
    let s = setup(&[30, 31, 32, 33, 34, 35, 36]);
    let mut raw = RawPeer::start(&s.peer_ns);
    let nh = |n: u8| [198, 18, 9, n];

    // Treat-as-withdraw: the route goes, the session stays.
    let withdraw_cases: Vec<(&str, u8, String)> = vec![
        (
            "ORIGIN value 3",
            30,
            format!(
                "40010103 400206 0201 {:08x} 400304 c612091f",
                u32::from(PEER_AS)
            ),
        ),
        (
            "missing NEXT_HOP",
            31,
            format!("40010100 400206 0201 {:08x}", u32::from(PEER_AS)),
        ),
        (
            // The attribute list cannot be parsed past it, but the NLRI can still be found
            // from the Total Path Attribute Length: RFC 7606 §4 treat-as-withdraw.
            "attribute length beyond the attribute list",
            35,
            format!("{} c008c8 01020304", good_attrs(nh(35))),
        ),
    ];
    for (name, n, attrs) in &withdraw_cases {
        let addr = format!("198.18.9.{n}");
        raw.establish(&addr, nh(*n), 90);
        wait_for(Duration::from_secs(10), "Established", || {
            (state(&s.control, &addr).as_deref() == Some("Established")).then_some(())
        });
        raw.send(&update(&good_attrs(nh(*n)), PREFIX_NLRI));
        wait_for(Duration::from_secs(10), "route learned", || {
            has_route(&s.control, PREFIX).then_some(())
        });
        raw.send(&update(attrs, PREFIX_NLRI));
        wait_for(Duration::from_secs(10), "route withdrawn", || {
            (!has_route(&s.control, PREFIX)).then_some(())
        });
        let (frames, eof) = raw.read(1000);
        assert!(!eof, "{name}: session closed");
        assert!(
            frames.iter().all(|f| f[18] != 3),
            "{name}: unexpected NOTIFICATION"
        );
        assert_eq!(
            state(&s.control, &addr).as_deref(),
            Some("Established"),
            "{name}"
        );
    }

    // Session resets, with the NOTIFICATION RFC 4271/7606/6608 names.
    let reset_cases: Vec<(&str, u8, String, (u8, u8))> = vec![
        (
            // The NLRI cannot be located: RFC 7606 §4 leaves only a session reset.
            "Total Path Attribute Length beyond the message",
            32,
            format!(
                "{MARKER}002b 02 0000 00c8 {}",
                good_attrs(nh(32)).replace(' ', "")
            ),
            (3, 1),
        ),
        (
            "NLRI prefix length 33",
            36,
            update(&good_attrs(nh(36)), "21 0a090102 03"),
            (3, 10),
        ),
        (
            "OPEN in Established",
            33,
            open(4, PEER_AS, 90, nh(33), None),
            (5, 3),
        ),
    ];
    for (name, n, bytes, (code, sub)) in &reset_cases {
        let addr = format!("198.18.9.{n}");
        raw.establish(&addr, nh(*n), 90);
        wait_for(Duration::from_secs(10), "Established", || {
            (state(&s.control, &addr).as_deref() == Some("Established")).then_some(())
        });
        raw.send(bytes);
        let got = raw.notification(5000);
        assert_eq!(
            got.as_ref().map(|(c, sc, _)| (*c, *sc)),
            Some((*code, *sub)),
            "{name}: {got:?}"
        );
    }

    // Hold timer: a peer that proposed 3 s and then falls silent gets 4/0 within ~3 s.
    let addr = "198.18.9.34";
    raw.establish(addr, nh(34), 3);
    let started = Instant::now();
    let got = raw.notification(8000);
    assert_eq!(
        got.as_ref().map(|(c, sc, _)| (*c, *sc)),
        Some((4, 0)),
        "{got:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(2), "too early");
}
