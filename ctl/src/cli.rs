//! Command-line syntax (clap derive). Everything that clap can check is checked here, so that a
//! usage mistake (unknown kind, bad selector, bad `key=value`) exits with status 2 and a usage
//! hint before anything touches the datastore.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tortie_api::Kind;
use tortie_api::values::LabelSelector;

/// The datastore used when neither `--datastore` nor `TORTIE_DATASTORE` is given: the
/// Kubernetes one when run as the kubectl plugin `kubectl-tortie` (`kubectl tortie …`),
/// else the embedded SQLite file.
pub fn default_datastore_url() -> String {
    if invoked_as_kubectl_plugin() {
        "kubernetes:".to_string()
    } else {
        format!("sqlite://{}", tortie_datastore::DEFAULT_SQLITE_PATH)
    }
}

/// Whether this process was started as `kubectl-tortie` (kubectl runs plugins by that name).
pub fn invoked_as_kubectl_plugin() -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .map(std::path::Path::new)
        .and_then(|p| p.file_name())
        .is_some_and(|n| n == "kubectl-tortie")
}

/// `tortiectl`: manage tortie resources.
#[derive(Debug, Parser)]
#[command(
    name = "tortiectl",
    version,
    about = "Manage tortie resources: IP pools, BGP configuration, peers and filters, nodes, IPAM settings",
    after_help = "Kinds (singular, plural or short name): ippool, bgpconfiguration (bgpconfig), bgppeer, \
                  bgpfilter, node, ipamconfiguration (ipamconfig), ipreservation (ipres); \
                  read-only: ipamblock, blockaffinity, ipamhandle."
)]
pub struct Cli {
    /// Datastore URL: sqlite:///path/to/store.db, etcd://host:port[,host:port…], or
    /// kubernetes: (in-cluster or $KUBECONFIG) / kubernetes:///path/to/kubeconfig.
    #[arg(
        long,
        global = true,
        env = "TORTIE_DATASTORE",
        value_name = "URL",
        default_value_t = default_datastore_url()
    )]
    pub datastore: String,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or update resources from files (each file is written all-or-nothing).
    Apply(WriteArgs),
    /// Create resources from files; fails if one exists (each file is written all-or-nothing).
    Create(WriteArgs),
    /// Replace existing resources from files; fails if one is missing (all-or-nothing per file).
    Replace(WriteArgs),
    /// Show resources.
    Get(GetArgs),
    /// Delete resources by name or from files (all-or-nothing per command or file).
    Delete(DeleteArgs),
    /// Add, change or remove labels of a resource.
    Label(LabelArgs),
    /// Change a resource with a JSON merge patch (RFC 7386).
    Patch(PatchArgs),
    /// Check files without touching the datastore.
    Validate(ValidateArgs),
    /// Show the client version and the datastore in use.
    Version(VersionArgs),
    /// Print a shell completion script.
    Completion(CompletionArgs),
    /// IPAM: utilisation, consistency checks, releases, configuration.
    Ipam(IpamArgs),
    /// This node's agent: BGP peers and routes (over the agent's local socket).
    Node(NodeArgs),
}

/// Arguments of `node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: NodeCommand,
}

/// The `node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// BGP peers per address family (PEER ADDRESS, PEER TYPE, STATE, SINCE, INFO), owned blocks.
    Status {
        /// The agent's socket.
        #[arg(long, default_value = "/var/run/tortie/agent.sock")]
        socket: std::path::PathBuf,
        /// Every node's status (Nodes from the datastore; each agent's `/status` over HTTP on
        /// its node address, where reachable).
        #[arg(long)]
        all: bool,
        /// The agents' health/status port, for --all.
        #[arg(long, default_value_t = 9099)]
        port: u16,
    },
    /// BGP best paths next to what the kernel has, per prefix.
    Routes {
        /// The agent's socket.
        #[arg(long, default_value = "/var/run/tortie/agent.sock")]
        socket: std::path::PathBuf,
    },
}

/// Arguments of `ipam`.
#[derive(Debug, Args)]
pub struct IpamArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: IpamCommand,
}

/// Output of the `ipam` subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpamOutput {
    /// Human-readable.
    Table,
    /// JSON.
    Json,
}

/// `ipam` subcommands.
#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Utilisation per pool (and per block), borrowed addresses, or one address.
    Show {
        /// Also list every block.
        #[arg(long)]
        show_blocks: bool,
        /// Also list addresses borrowed from another node's block.
        #[arg(long)]
        show_borrowed: bool,
        /// Show who holds this address.
        #[arg(long, value_name = "ADDR")]
        ip: Option<std::net::IpAddr>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = IpamOutput::Table)]
        output: IpamOutput,
    },
    /// Find leaks and inconsistencies; exits 1 when any is found.
    Check {
        /// Handles whose owners exist (JSON list or one per line): any other holder is a leak.
        #[arg(long, value_name = "FILE")]
        live_handles: Option<PathBuf>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = IpamOutput::Table)]
        output: IpamOutput,
    },
    /// Release one address (optionally only at a sequence number) or every address of a handle.
    Release {
        /// The address.
        #[arg(
            long,
            value_name = "ADDR",
            conflicts_with = "handle",
            required_unless_present = "handle"
        )]
        ip: Option<std::net::IpAddr>,
        /// Release only if the address still has this sequence number (see `ipam show --ip`).
        #[arg(long, requires = "ip")]
        sequence: Option<u64>,
        /// The handle.
        #[arg(long, value_name = "HANDLE")]
        handle: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = IpamOutput::Table)]
        output: IpamOutput,
    },
    /// Change the IPAM configuration.
    Configure {
        /// Never borrow addresses from other nodes' blocks.
        #[arg(long, value_name = "BOOL")]
        strict_affinity: Option<bool>,
        /// Blocks one node may own (0 = unlimited).
        #[arg(long, value_name = "N")]
        max_blocks_per_host: Option<u32>,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = IpamOutput::Table)]
        output: IpamOutput,
    },
}

/// Arguments of `apply`, `create` and `replace`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// A file, a directory (every *.yaml, *.yml, *.json in it, not recursive) or `-` for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table of the main fields.
    #[value(alias = "ps")]
    Table,
    /// A table with more columns.
    Wide,
    /// YAML, one document per object.
    Yaml,
    /// JSON: the object, or a `List` of objects.
    Json,
}

/// Arguments of `get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Kind: singular, plural or short name (e.g. ippool, ippools, ipp).
    #[arg(value_parser = parse_kind, value_name = "KIND")]
    pub kind: Kind,
    /// Names; all objects of the kind when none.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Only objects whose labels match this selector, e.g. `rack == 'rack-1'`.
    #[arg(
        short = 'l',
        long = "selector",
        value_parser = parse_selector,
        value_name = "SELECTOR",
        conflicts_with = "names"
    )]
    pub selector: Option<LabelSelector>,
}

/// Arguments of `delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Kind: singular, plural or short name.
    #[arg(value_parser = parse_kind, value_name = "KIND", required_unless_present = "files")]
    pub kind: Option<Kind>,
    /// Names of the objects to delete.
    #[arg(value_name = "NAME", required_unless_present = "files")]
    pub names: Vec<String>,
    /// Delete the objects named in these files (a file, a directory, or `-` for stdin).
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        conflicts_with_all = ["kind", "names"]
    )]
    pub files: Vec<PathBuf>,
    /// Do not fail on objects that do not exist.
    #[arg(long, visible_alias = "skip-not-exists")]
    pub skip_not_found: bool,
}

/// One change of `label`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOp {
    /// `key=value`.
    Set(String, String),
    /// `key-`.
    Remove(String),
}

/// Arguments of `label`.
#[derive(Debug, Args)]
pub struct LabelArgs {
    /// Kind: singular, plural or short name.
    #[arg(value_parser = parse_kind, value_name = "KIND")]
    pub kind: Kind,
    /// The object's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// `key=value` to set, `key-` to remove.
    #[arg(value_name = "KEY=VALUE|KEY-", required = true, value_parser = parse_label_op)]
    pub labels: Vec<LabelOp>,
    /// Allow changing the value of a label that is already set.
    #[arg(long)]
    pub overwrite: bool,
}

/// Arguments of `patch`.
#[derive(Debug, Args)]
pub struct PatchArgs {
    /// Kind: singular, plural or short name.
    #[arg(value_parser = parse_kind, value_name = "KIND")]
    pub kind: Kind,
    /// The object's name.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// A JSON merge patch (RFC 7386): objects merge, `null` removes a key, anything else
    /// replaces. Example: '{"spec":{"natOutgoing":true}}'.
    #[arg(short = 'p', long = "patch", value_name = "JSON")]
    pub patch: String,
}

/// Arguments of `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A file, a directory (every *.yaml, *.yml, *.json in it, not recursive) or `-` for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "FILE|DIR|-",
        required = true
    )]
    pub files: Vec<PathBuf>,
}

/// Arguments of `version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Only the client version; do not contact the datastore.
    #[arg(long)]
    pub client: bool,
}

/// Arguments of `completion`.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The names a kind is known by, for messages: `ippool (ippools, ipp, pool, pools)`.
pub fn kind_names() -> String {
    Kind::ALL
        .iter()
        .map(|k| {
            let singular = k.name().to_ascii_lowercase();
            let mut others: Vec<&str> = vec![k.plural()];
            others.extend(k.aliases().iter().copied().filter(|a| *a != singular));
            format!("{singular} ({})", others.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses a kind name for clap.
pub fn parse_kind(text: &str) -> Result<Kind, String> {
    Kind::lookup(text).ok_or_else(|| {
        format!(
            "unknown resource kind {text:?}; valid kinds: {}",
            kind_names()
        )
    })
}

/// Parses a label selector for clap.
pub fn parse_selector(text: &str) -> Result<LabelSelector, String> {
    text.parse()
}

/// Parses `key=value` or `key-` for clap.
pub fn parse_label_op(text: &str) -> Result<LabelOp, String> {
    if let Some((k, v)) = text.split_once('=') {
        if k.is_empty() {
            return Err(format!("{text:?}: the label key is empty (use key=value)"));
        }
        return Ok(LabelOp::Set(k.to_string(), v.to_string()));
    }
    if let Some(k) = text.strip_suffix('-')
        && !k.is_empty()
    {
        return Ok(LabelOp::Remove(k.to_string()));
    }
    Err(format!(
        "{text:?}: use key=value to set a label or key- to remove one"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn label_ops() {
        assert_eq!(
            parse_label_op("a=b"),
            Ok(LabelOp::Set("a".into(), "b".into()))
        );
        assert_eq!(
            parse_label_op("a="),
            Ok(LabelOp::Set("a".into(), "".into()))
        );
        assert_eq!(parse_label_op("a/b-"), Ok(LabelOp::Remove("a/b".into())));
        assert!(parse_label_op("a").is_err());
        assert!(parse_label_op("-").is_err());
        assert!(parse_label_op("=x").is_err());
    }

    #[test]
    fn kinds_by_any_name() {
        assert_eq!(parse_kind("ipp"), Ok(Kind::IPPool));
        assert_eq!(parse_kind("BGPPeers"), Ok(Kind::BGPPeer));
        let err = parse_kind("nosuch").unwrap_err();
        assert!(err.contains("ippool (ippools, ipp, pool, pools)"), "{err}");
    }
}
