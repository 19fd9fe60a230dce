//! The verbs of the `tortie` plugin (ADD, DEL, CHECK, VERSION, STATUS, GC) and of the standalone
//! `tortie-ipam` plugin, over the pieces in `spec`, `agent`, `dataplane` and `state`.
//!
//! Ordering rules that keep the node clean:
//! - ADD records the attachment before asking IPAM, and undoes everything (veth, allocation,
//!   record) on any later failure, so no failure leaves half a pod behind.
//! - An interface name already taken in the container fails ADD before anything is touched.
//! - DEL removes the veth first (works with no netns at all), then releases; if the agent is
//!   down the release is written to `pending-releases/` and DEL still succeeds.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tortie_sys::netns::NetNs;

use crate::agent::{Agent, AgentError};
use crate::dataplane::{self, Attach};
use crate::log::Log;
use crate::spec::{
    AddResult, CniError, Command, Env, Interface, NetConf, NodeSettings, code, config_version,
    host_veth_name, version_json,
};
use crate::state::{Record, State, finish_release};

/// Which binary is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// The main plugin: veth, routes and addresses.
    Main,
    /// IPAM only (`tortie-ipam`), for other main plugins.
    IpamOnly,
}

/// Runs one invocation. `Ok(Some(json))` is printed on stdout; errors are printed as CNI error
/// JSON in the configuration's version by the caller.
pub async fn run(flavour: Flavour, env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    let command = env.command.expect("from_lookup sets it");
    if command == Command::Version {
        return Ok(Some(version_json(&config_version(stdin))));
    }
    let conf = NetConf::parse(stdin)?;
    let log = Log::open(&conf.log_file, &env.container_id);
    log.line(&format!(
        "{command:?} ifname={} netns={}",
        env.ifname, env.netns
    ));
    let res = match (command, flavour) {
        (Command::Add, Flavour::Main) => add(env, &conf, &log).await,
        (Command::Del, Flavour::Main) => del(env, &conf, &log).await.map(|()| None),
        (Command::Check, Flavour::Main) => check(env, &conf).await.map(|()| None),
        (Command::Add, Flavour::IpamOnly) => ipam_add(env, &conf).await,
        (Command::Del, Flavour::IpamOnly) => ipam_del(env, &conf, &log).await.map(|()| None),
        (Command::Check, Flavour::IpamOnly) => ipam_check(env, &conf).await.map(|()| None),
        (Command::Status, _) => status(&conf).await.map(|()| None),
        (Command::Gc, _) => gc(&conf, &log, flavour).await.map(|()| None),
        (Command::Version, _) => unreachable!("answered above"),
    };
    match &res {
        Ok(_) => log.line(&format!("{command:?} ok")),
        Err(e) => log.line(&format!("{command:?} failed: {e}")),
    }
    res
}

fn timeout(conf: &NetConf) -> Duration {
    Duration::from_secs_f64(conf.timeout_seconds)
}

async fn agent(conf: &NetConf) -> Result<Agent, AgentError> {
    Agent::connect(Path::new(&conf.agent_socket), timeout(conf)).await
}

fn state(conf: &NetConf) -> State {
    State::new(&conf.data_dir)
}

fn io_err(what: &str, e: std::io::Error) -> CniError {
    CniError::new(code::IO, format!("cannot {what}"), e.to_string())
}

fn open_netns(path: &str) -> Result<NetNs, CniError> {
    NetNs::open(path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            "cannot open the container's network namespace",
            format!("{path}: {e}"),
        )
    })
}

fn attributes(env: &Env, conf: &NetConf) -> HashMap<String, String> {
    let mut a = HashMap::from([
        ("containerID".to_string(), env.container_id.clone()),
        ("network".to_string(), conf.name.clone()),
    ]);
    if let Some(ns) = env.args.get("K8S_POD_NAMESPACE") {
        a.insert("namespace".into(), ns.clone());
    }
    if let Some(pod) = env.args.get("K8S_POD_NAME") {
        a.insert("pod".into(), pod.clone());
    }
    // Lets IPAM GC tell this pod from a later one of the same name (StatefulSets).
    if let Some(uid) = env.args.get("K8S_POD_UID") {
        a.insert("podUID".into(), uid.clone());
    }
    a
}

/// Allocates for the attachment. `earlier_attempt`: a record of this handle already existed,
/// left by an ADD that died half-way; whatever it allocated goes back first, so the handle
/// never holds two addresses.
async fn allocate(
    env: &Env,
    conf: &NetConf,
    earlier_attempt: bool,
) -> Result<Vec<IpAddr>, CniError> {
    let handle = conf.handle_id(&env.container_id);
    let ipam = conf.ipam();
    let mut agent = agent(conf).await.map_err(|e| e.to_cni("allocate"))?;
    if earlier_attempt {
        agent
            .release(&handle)
            .await
            .map_err(|e| e.to_cni("release of an earlier attempt"))?;
    }
    let mut pools = ipam.ipv4_pools.clone();
    pools.extend(ipam.ipv6_pools.iter().cloned());
    agent
        .allocate(
            &handle,
            attributes(env, conf),
            ipam.want_v4(),
            ipam.want_v6(),
            pools,
        )
        .await
        .map_err(|e| e.to_cni("allocate"))
}

/// Best-effort release: now if the agent answers, else recorded for later.
async fn release_or_defer(conf: &NetConf, handle: &str, log: &Log) -> Result<(), CniError> {
    let outcome = match agent(conf).await {
        Ok(mut a) => a.release(handle).await.map(|_| ()),
        Err(e) => Err(e),
    };
    match outcome {
        Ok(()) => Ok(()),
        // Teardown never blocks on IPAM: whatever went wrong (agent down, datastore busy, a
        // transient error), the release is recorded and the agent finishes it.
        Err(e) => {
            let why = match &e {
                AgentError::Unreachable(why) => format!("agent unreachable ({why})"),
                AgentError::Refused(s) => format!("agent answered {:?}: {}", s.code(), s.message()),
            };
            log.line(&format!("{why}; release of {handle} deferred"));
            state(conf)
                .defer_release(handle)
                .map_err(|e| io_err("record a deferred release", e))
        }
    }
}

async fn add(env: &Env, conf: &NetConf, log: &Log) -> Result<Option<Value>, CniError> {
    env.require(true)?;
    let netns = open_netns(&env.netns)?;
    let host = dataplane::connect(None)?;
    let container = dataplane::connect(Some(&netns))?;
    if dataplane::link_by_name(&container, &env.ifname)
        .await?
        .is_some()
    {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            "interface already exists in the container",
            format!("{} is taken in {}", env.ifname, env.netns),
        ));
    }
    let st = state(conf);
    let handle = conf.handle_id(&env.container_id);
    let host_ifname = host_veth_name(&env.workload_id());
    let node = NodeSettings::load(Path::new(&conf.data_dir));
    let mut record = Record {
        handle_id: handle.clone(),
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        host_ifname: host_ifname.clone(),
        addresses: Vec::new(),
    };
    // Recorded before IPAM is asked: if we die from here on, the record tells DEL, GC and the
    // next ADD what to undo.
    let earlier_attempt = st.load(&handle).is_some();
    st.save(&record)
        .map_err(|e| io_err("record the attachment", e))?;
    let addresses = match allocate(env, conf, earlier_attempt).await {
        Ok(a) => a,
        Err(e) => {
            let _ = st.forget(&handle);
            return Err(e);
        }
    };
    record.addresses = addresses.clone();
    let attach = Attach {
        host_ifname: &host_ifname,
        container_ifname: &env.ifname,
        addresses: &addresses,
        mtu: conf.mtu(&node),
        route_protocol: conf.route_protocol(&node),
    };
    let built = async {
        let macs = dataplane::attach(&host, &container, &netns, &attach).await?;
        st.save(&record)
            .map_err(|e| io_err("record the attachment", e))?;
        Ok::<_, CniError>(macs)
    }
    .await;
    let (host_mac, container_mac) = match built {
        Ok(m) => m,
        Err(e) => {
            log.line(&format!("ADD failed after allocation, undoing: {e}"));
            let _ = dataplane::detach(&host, &host_ifname).await;
            if let Err(r) = release_or_defer(conf, &handle, log).await {
                log.line(&format!("undo: release failed: {r}"));
            }
            let _ = st.forget(&handle);
            return Err(e);
        }
    };
    log.line(&format!(
        "ADD {host_ifname} {}",
        addresses
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",")
    ));
    let result = AddResult {
        interfaces: vec![
            Interface {
                name: host_ifname,
                mac: host_mac,
                sandbox: String::new(),
            },
            Interface {
                name: env.ifname.clone(),
                mac: container_mac,
                sandbox: env.netns.clone(),
            },
        ],
        addresses,
        container_interface: 1,
    };
    Ok(Some(
        result.to_json(&conf.cni_version, conf.prev_result.as_ref()),
    ))
}

async fn del(env: &Env, conf: &NetConf, log: &Log) -> Result<(), CniError> {
    env.require(false)?;
    let st = state(conf);
    let handle = conf.handle_id(&env.container_id);
    let host_ifname = st
        .load(&handle)
        .map(|r| r.host_ifname)
        .unwrap_or_else(|| host_veth_name(&env.workload_id()));
    let host = dataplane::connect(None)?;
    // The pair goes with its host end; the container's namespace may already be gone.
    dataplane::detach(&host, &host_ifname).await?;
    release_or_defer(conf, &handle, log).await?;
    st.forget(&handle)
        .map_err(|e| io_err("forget the attachment", e))
}

async fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    env.require(true)?;
    let st = state(conf);
    let handle = conf.handle_id(&env.container_id);
    let record = st.load(&handle).ok_or_else(|| {
        CniError::new(
            code::CHECK_FAILED,
            "unknown attachment",
            format!("no record of {handle}: ADD never completed on this node"),
        )
    })?;
    if let Some(prev) = &conf.prev_result {
        for net in crate::spec::prev_addresses(prev) {
            if !record.addresses.contains(&net.addr()) {
                return Err(CniError::new(
                    code::CHECK_FAILED,
                    "prevResult disagrees with the attachment",
                    format!("{} is not an address of {handle}", net.addr()),
                ));
            }
        }
    }
    // The allocation must still be this handle's.
    let mut agent = agent(conf).await.map_err(|e| e.to_cni("check"))?;
    let held = agent.get(&handle).await.map_err(|e| e.to_cni("check"))?;
    for ip in &record.addresses {
        if !held.contains(ip) {
            return Err(CniError::new(
                code::CHECK_FAILED,
                "allocation released",
                format!("{ip} is no longer allocated to {handle}"),
            ));
        }
    }
    let netns = open_netns(&env.netns)?;
    let host = dataplane::connect(None)?;
    let container = dataplane::connect(Some(&netns))?;
    let node = NodeSettings::load(Path::new(&conf.data_dir));
    dataplane::check(
        &host,
        &container,
        &Attach {
            host_ifname: &record.host_ifname,
            container_ifname: &env.ifname,
            addresses: &record.addresses,
            mtu: conf.mtu(&node),
            route_protocol: conf.route_protocol(&node),
        },
    )
    .await
}

async fn status(conf: &NetConf) -> Result<(), CniError> {
    agent(conf).await.map(|_| ()).map_err(|e| {
        let mut err = e.to_cni("status");
        err.code = code::NOT_AVAILABLE;
        err
    })
}

/// GC (spec 1.1.0): every attachment of this network not in `cni.dev/valid-attachments` goes;
/// deferred releases are retried.
async fn gc(conf: &NetConf, log: &Log, flavour: Flavour) -> Result<(), CniError> {
    let valid: BTreeSet<(String, String)> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| (a.container_id.clone(), a.ifname.clone()))
        .collect();
    let st = state(conf);
    let host = if flavour == Flavour::Main {
        Some(dataplane::connect(None)?)
    } else {
        None
    };
    let prefix = format!("{}.", conf.name);
    for r in st.all() {
        if !r.handle_id.starts_with(&prefix)
            || valid.contains(&(r.container_id.clone(), r.ifname.clone()))
        {
            continue;
        }
        log.line(&format!("GC: {} is not a valid attachment", r.handle_id));
        if let Some(h) = &host {
            dataplane::detach(h, &r.host_ifname).await?;
        }
        release_or_defer(conf, &r.handle_id, log).await?;
        st.forget(&r.handle_id)
            .map_err(|e| io_err("forget the attachment", e))?;
    }
    if let Ok(mut agent) = agent(conf).await {
        for (handle, file) in st.pending_releases() {
            if agent.release(&handle).await.is_ok() {
                let _ = finish_release(&file);
            }
        }
    }
    Ok(())
}

// ---- tortie-ipam: IPAM only, for other main plugins ----

async fn ipam_add(env: &Env, conf: &NetConf) -> Result<Option<Value>, CniError> {
    env.require(false)?;
    let st = state(conf);
    let handle = conf.handle_id(&env.container_id);
    let addresses = allocate(env, conf, st.load(&handle).is_some()).await?;
    st.save(&Record {
        handle_id: handle,
        container_id: env.container_id.clone(),
        ifname: env.ifname.clone(),
        host_ifname: String::new(),
        addresses: addresses.clone(),
    })
    .map_err(|e| io_err("record the attachment", e))?;
    let legacy = conf.cni_version.starts_with("0.");
    let ips: Vec<Value> = addresses
        .iter()
        .map(|a| {
            let len = if a.is_ipv4() { 32 } else { 128 };
            let mut v = json!({"address": format!("{a}/{len}")});
            if legacy {
                v["version"] = json!(if a.is_ipv4() { "4" } else { "6" });
            }
            v
        })
        .collect();
    Ok(Some(json!({
        "cniVersion": conf.cni_version,
        "ips": ips,
        "dns": {},
    })))
}

async fn ipam_del(env: &Env, conf: &NetConf, log: &Log) -> Result<(), CniError> {
    env.require(false)?;
    let handle = conf.handle_id(&env.container_id);
    release_or_defer(conf, &handle, log).await?;
    state(conf)
        .forget(&handle)
        .map_err(|e| io_err("forget the attachment", e))
}

async fn ipam_check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    env.require(false)?;
    let handle = conf.handle_id(&env.container_id);
    let mut agent = agent(conf).await.map_err(|e| e.to_cni("check"))?;
    let held = agent.get(&handle).await.map_err(|e| e.to_cni("check"))?;
    if held.is_empty() {
        return Err(CniError::new(
            code::CHECK_FAILED,
            "allocation released",
            format!("{handle} holds no address"),
        ));
    }
    Ok(())
}

/// The whole program: reads env and stdin, runs, prints, returns the exit code.
pub fn main(flavour: Flavour) -> i32 {
    let env = match Env::from_lookup(|k| std::env::var(k).ok()) {
        Ok(e) => e,
        Err(e) => {
            println!("{}", e.to_json("1.0.0"));
            return 1;
        }
    };
    let mut stdin = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut stdin) {
        println!(
            "{}",
            CniError::new(code::IO, "cannot read stdin", e.to_string()).to_json("1.0.0")
        );
        return 1;
    }
    let version = config_version(&stdin);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            println!(
                "{}",
                CniError::new(code::IO, "cannot start", e.to_string()).to_json(&version)
            );
            return 1;
        }
    };
    match rt.block_on(run(flavour, &env, &stdin)) {
        Ok(Some(v)) => {
            println!("{v}");
            0
        }
        Ok(None) => 0,
        Err(e) => {
            println!("{}", e.to_json(&version));
            1
        }
    }
}
