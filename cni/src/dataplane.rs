//! The Calico data plane for one pod, over rtnetlink: no bridge, a veth per pod.
//!
//! ```text
//!  container netns                         host netns
//!  eth0  10.244.1.5/32  ◄──── veth ────►  cali<sha1[..11]>  ee:ee:ee:ee:ee:ee, proxy_arp=1
//!  169.254.1.1 dev eth0 scope link         10.244.1.5 dev cali… proto 80 scope link
//!  default via 169.254.1.1 dev eth0        (IPv6: /128 route, proxy_ndp=1)
//!  default via fe80::ecee:eeff:feee:eeee
//! ```
//!
//! The pod's next hop 169.254.1.1 exists nowhere: the host side answers ARP for it by proxy ARP
//! (it does so for any address the host routes elsewhere, so the host needs a route covering
//! 169.254.1.1, normally its default route). IPv6 pods use the host side's link-local address,
//! which the fixed MAC makes the same on every veth.
//!
//! Two netlink connections are used: one opened in the host namespace, one opened from a thread
//! inside the container namespace ([`tortie_sys::netns`]). The veth is created from the host
//! side with its peer placed straight into the container (`IFLA_NET_NS_FD`), so a name such as
//! `eth0` never appears on the host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, RouteMessageBuilder};
use tortie_sys::netns::NetNs;

use crate::spec::{CniError, IPV4_GATEWAY, IPV6_GATEWAY, code};

/// MAC of every host-side veth (Calico's).
pub const HOST_MAC: [u8; 6] = [0xee; 6];

/// What to build.
#[derive(Debug, Clone)]
pub struct Attach<'a> {
    /// Host-side name (`cali…`).
    pub host_ifname: &'a str,
    /// Container-side name (`CNI_IFNAME`).
    pub container_ifname: &'a str,
    /// Pod addresses (each a host route: /32, /128).
    pub addresses: &'a [IpAddr],
    /// MTU of both ends.
    pub mtu: u32,
    /// Protocol number of the host routes.
    pub route_protocol: u8,
}

fn kernel_err(what: &str, e: impl std::fmt::Display) -> CniError {
    CniError::new(code::KERNEL, format!("cannot {what}"), e.to_string())
}

/// A netlink connection in the current namespace, or in `ns`.
pub fn connect(ns: Option<&NetNs>) -> Result<Handle, CniError> {
    let rt = tokio::runtime::Handle::current();
    let open = move || {
        let _guard = rt.enter();
        rtnetlink::new_connection()
    };
    let (conn, handle, _) = match ns {
        None => open(),
        Some(ns) => ns
            .run_in(open)
            .map_err(|e| kernel_err("enter the container network namespace", e))?,
    }
    .map_err(|e| kernel_err("open a netlink socket", e))?;
    tokio::spawn(conn);
    Ok(handle)
}

/// The link called `name`, if any.
pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, CniError> {
    match h.link().get().match_name(name).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(rtnetlink::Error::NetlinkError(e))
            if e.raw_code().abs() == libc_enodev() || e.raw_code().abs() == 2 =>
        {
            Ok(None)
        }
        Err(e) => Err(kernel_err(&format!("look up link {name}"), e)),
    }
}

const fn libc_enodev() -> i32 {
    19
}

fn mac_of(link: &LinkMessage) -> String {
    link.attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(
                mac.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            _ => None,
        })
        .unwrap_or_default()
}

fn write_sysctl(path: &str, value: &str) -> Result<(), CniError> {
    std::fs::write(path, value).map_err(|e| kernel_err(&format!("set {path}"), e))
}

/// Builds the pod's network. On error the caller removes the host veth (which takes the
/// container end with it); nothing else is left, since routes and addresses live on the pair.
pub async fn attach(
    host: &Handle,
    container: &Handle,
    container_ns: &NetNs,
    a: &Attach<'_>,
) -> Result<(String, String), CniError> {
    if link_by_name(container, a.container_ifname).await?.is_some() {
        return Err(CniError::new(
            code::INTERFACE_EXISTS,
            "interface already exists in the container",
            format!(
                "{} is taken in the container's namespace",
                a.container_ifname
            ),
        ));
    }
    // A host veth left by an earlier attempt for the same workload (crash, killed plugin) is
    // ours by name: remove it so the new pair can take the name.
    if let Some(stale) = link_by_name(host, a.host_ifname).await? {
        let _ = host.link().del(stale.header.index).execute().await;
    }
    let peer = LinkMessageBuilder::<LinkUnspec>::new()
        .name(a.container_ifname.to_string())
        .mtu(a.mtu)
        .setns_by_fd(container_ns.file().as_raw_fd())
        .build();
    let veth = LinkMessageBuilder::<LinkUnspec>::new_with_info_kind(InfoKind::Veth)
        .name(a.host_ifname.to_string())
        .mtu(a.mtu)
        .address(HOST_MAC.to_vec())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    host.link()
        .add(veth)
        .execute()
        .await
        .map_err(|e| kernel_err(&format!("create veth {}", a.host_ifname), e))?;
    let host_link = link_by_name(host, a.host_ifname)
        .await?
        .ok_or_else(|| kernel_err("find the new host veth", "gone"))?;
    let host_index = host_link.header.index;

    let has_v4 = a.addresses.iter().any(IpAddr::is_ipv4);
    let has_v6 = a.addresses.iter().any(IpAddr::is_ipv6);
    // Host-side sysctls, as Calico's CNI plugin sets them.
    let conf4 = format!("/proc/sys/net/ipv4/conf/{}", a.host_ifname);
    if has_v4 {
        write_sysctl(&format!("{conf4}/proxy_arp"), "1")?;
        write_sysctl(
            &format!("/proc/sys/net/ipv4/neigh/{}/proxy_delay", a.host_ifname),
            "0",
        )?;
        write_sysctl(&format!("{conf4}/forwarding"), "1")?;
        write_sysctl(&format!("{conf4}/route_localnet"), "1")?;
    }
    let conf6 = format!("/proc/sys/net/ipv6/conf/{}", a.host_ifname);
    if std::path::Path::new(&conf6).exists() {
        write_sysctl(&format!("{conf6}/accept_ra"), "0")?;
        if has_v6 {
            write_sysctl(&format!("{conf6}/disable_ipv6"), "0")?;
            write_sysctl(&format!("{conf6}/accept_dad"), "0")?;
            write_sysctl(&format!("{conf6}/proxy_ndp"), "1")?;
            write_sysctl(&format!("{conf6}/forwarding"), "1")?;
        }
    }
    host.link()
        .set(LinkUnspec::new_with_index(host_index).up().build())
        .execute()
        .await
        .map_err(|e| kernel_err("bring the host veth up", e))?;

    // Container side.
    let c_link = link_by_name(container, a.container_ifname)
        .await?
        .ok_or_else(|| kernel_err("find the container end of the veth", "gone"))?;
    let c_index = c_link.header.index;
    container
        .link()
        .set(LinkUnspec::new_with_index(c_index).up().build())
        .execute()
        .await
        .map_err(|e| kernel_err("bring the container interface up", e))?;
    for ip in a.addresses {
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        let mut req = container.address().add(c_index, *ip, prefix);
        if ip.is_ipv6() {
            // No duplicate address detection: the address is ours by allocation, and DAD
            // would hold it "tentative" for a second.
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes.push(AddressAttribute::Flags(
                netlink_packet_route::address::AddressFlags::Nodad,
            ));
        }
        req.execute()
            .await
            .map_err(|e| kernel_err(&format!("add {ip}/{prefix} in the container"), e))?;
    }
    if has_v4 {
        let gw: Ipv4Addr = IPV4_GATEWAY.parse().expect("constant");
        let link_route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(gw, 32)
            .output_interface(c_index)
            .scope(RouteScope::Link)
            // What `ip route add` writes: these are the pod's own static routes.
            .protocol(RouteProtocol::Boot)
            .build();
        add_route(
            container,
            link_route,
            "add the 169.254.1.1 route in the container",
        )
        .await?;
        let default = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(Ipv4Addr::UNSPECIFIED, 0)
            .gateway(gw)
            .output_interface(c_index)
            // What `ip route add` writes: these are the pod's own static routes.
            .protocol(RouteProtocol::Boot)
            .build();
        add_route(container, default, "add the default route in the container").await?;
    }
    if has_v6 {
        let gw: Ipv6Addr = IPV6_GATEWAY.parse().expect("constant");
        let default = RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(Ipv6Addr::UNSPECIFIED, 0)
            .gateway(gw)
            .output_interface(c_index)
            // What `ip route add` writes: these are the pod's own static routes.
            .protocol(RouteProtocol::Boot)
            .build();
        add_route(
            container,
            default,
            "add the IPv6 default route in the container",
        )
        .await?;
    }

    // Host routes to the pod.
    for ip in a.addresses {
        add_route(
            host,
            host_route(*ip, host_index, a.route_protocol),
            &format!("add the host route to {ip}"),
        )
        .await?;
    }
    Ok((mac_of(&host_link), mac_of(&c_link)))
}

/// Adds one route; the error says which.
async fn add_route(h: &Handle, route: RouteMessage, what: impl AsRef<str>) -> Result<(), CniError> {
    h.route()
        .add(route)
        .execute()
        .await
        .map_err(|e| kernel_err(what.as_ref(), e))
}

fn host_route(ip: IpAddr, index: u32, protocol: u8) -> RouteMessage {
    match ip {
        IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(v4, 32)
            .output_interface(index)
            .scope(RouteScope::Link)
            .protocol(RouteProtocol::from(protocol))
            .build(),
        IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(v6, 128)
            .output_interface(index)
            .protocol(RouteProtocol::from(protocol))
            .build(),
    }
}

/// Removes the host veth (and with it the container end and every route through it).
/// Missing is fine: DEL is idempotent.
pub async fn detach(host: &Handle, host_ifname: &str) -> Result<bool, CniError> {
    let Some(link) = link_by_name(host, host_ifname).await? else {
        return Ok(false);
    };
    match host.link().del(link.header.index).execute().await {
        Ok(()) => Ok(true),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc_enodev() => Ok(false),
        Err(e) => Err(kernel_err(&format!("delete {host_ifname}"), e)),
    }
}

/// The smallest MTU among the namespace's up, non-loopback links other than pod veths: what
/// pods can use without fragmenting on the way out (no encapsulation: routed pods).
pub async fn uplink_mtu(h: &Handle) -> Result<Option<u32>, CniError> {
    let links: Vec<LinkMessage> = h
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| kernel_err("list links", e))?;
    Ok(links
        .iter()
        .filter(|l| is_up(l) && !l.header.flags.contains(LinkFlags::Loopback))
        .filter(|l| {
            !l.attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::IfName(n) if n.starts_with("cali")))
        })
        .filter_map(|l| {
            l.attributes.iter().find_map(|a| match a {
                LinkAttribute::Mtu(m) => Some(*m),
                _ => None,
            })
        })
        .min())
}

fn is_up(link: &LinkMessage) -> bool {
    link.header.flags.contains(LinkFlags::Up)
}

async fn routes(h: &Handle, family: AddressFamily) -> Result<Vec<RouteMessage>, CniError> {
    let req = match family {
        AddressFamily::Inet6 => RouteMessageBuilder::<Ipv6Addr>::new().build(),
        _ => RouteMessageBuilder::<Ipv4Addr>::new().build(),
    };
    h.route()
        .get(req)
        .execute()
        .try_collect()
        .await
        .map_err(|e| kernel_err("list routes", e))
}

fn route_dst(r: &RouteMessage) -> Option<(IpAddr, u8)> {
    let len = r.header.destination_prefix_length;
    let dst = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    });
    match (dst, len) {
        (Some(d), l) => Some((d, l)),
        (None, 0) => Some((
            if r.header.address_family == AddressFamily::Inet6 {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            },
            0,
        )),
        _ => None,
    }
}

fn route_oif(r: &RouteMessage) -> Option<u32> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

fn route_gw(r: &RouteMessage) -> Option<IpAddr> {
    r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Gateway(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Gateway(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

fn check_failed(what: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(code::CHECK_FAILED, what, details)
}

/// CHECK: everything [`attach`] made is still there; the first discrepancy is the error.
pub async fn check(host: &Handle, container: &Handle, a: &Attach<'_>) -> Result<(), CniError> {
    let host_link = link_by_name(host, a.host_ifname).await?.ok_or_else(|| {
        check_failed(
            "host veth missing",
            format!("{} does not exist", a.host_ifname),
        )
    })?;
    if !is_up(&host_link) {
        return Err(check_failed(
            "host veth down",
            format!("{} is not up", a.host_ifname),
        ));
    }
    let c_link = link_by_name(container, a.container_ifname)
        .await?
        .ok_or_else(|| {
            check_failed(
                "container interface missing",
                format!("{} does not exist in the container", a.container_ifname),
            )
        })?;
    if !is_up(&c_link) {
        return Err(check_failed(
            "container interface down",
            format!("{} is not up", a.container_ifname),
        ));
    }
    let c_index = c_link.header.index;
    let addrs: Vec<IpAddr> = container
        .address()
        .get()
        .set_link_index_filter(c_index)
        .execute()
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| kernel_err("list container addresses", e))?
        .iter()
        .flat_map(|m| {
            m.attributes.iter().filter_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            })
        })
        .collect();
    for ip in a.addresses {
        if !addrs.contains(ip) {
            return Err(check_failed(
                "address missing in the container",
                format!("{ip} is not on {}", a.container_ifname),
            ));
        }
    }
    let has_v4 = a.addresses.iter().any(IpAddr::is_ipv4);
    let has_v6 = a.addresses.iter().any(IpAddr::is_ipv6);
    if has_v4 {
        let rs = routes(container, AddressFamily::Inet).await?;
        let gw: IpAddr = IPV4_GATEWAY.parse().expect("constant");
        if !rs
            .iter()
            .any(|r| route_dst(r) == Some((gw, 32)) && route_oif(r) == Some(c_index))
        {
            return Err(check_failed(
                "route missing in the container",
                format!("169.254.1.1 dev {} scope link", a.container_ifname),
            ));
        }
        if !rs.iter().any(|r| {
            route_dst(r) == Some((IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)) && route_gw(r) == Some(gw)
        }) {
            return Err(check_failed(
                "route missing in the container",
                "default via 169.254.1.1",
            ));
        }
    }
    if has_v6 {
        let rs = routes(container, AddressFamily::Inet6).await?;
        let gw: IpAddr = IPV6_GATEWAY.parse().expect("constant");
        if !rs.iter().any(|r| {
            route_dst(r) == Some((IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)) && route_gw(r) == Some(gw)
        }) {
            return Err(check_failed(
                "route missing in the container",
                format!("default via {IPV6_GATEWAY}"),
            ));
        }
    }
    let host_index = host_link.header.index;
    for (fam, wanted) in [
        (AddressFamily::Inet, has_v4),
        (AddressFamily::Inet6, has_v6),
    ] {
        if !wanted {
            continue;
        }
        let rs = routes(host, fam).await?;
        for ip in a
            .addresses
            .iter()
            .filter(|ip| ip.is_ipv6() == (fam == AddressFamily::Inet6))
        {
            let len = if ip.is_ipv4() { 32 } else { 128 };
            if !rs
                .iter()
                .any(|r| route_dst(r) == Some((*ip, len)) && route_oif(r) == Some(host_index))
            {
                return Err(check_failed(
                    "host route missing",
                    format!("{ip}/{len} dev {}", a.host_ifname),
                ));
            }
        }
    }
    Ok(())
}
