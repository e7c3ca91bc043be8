//! What the kernel knows about the route to an address: the local address and
//! interface it leaves by, that interface's MTU, and the path MTU the kernel has
//! cached for the destination (`IP_MTU` / `IPV6_MTU` on a connected UDP socket;
//! connecting a UDP socket sends nothing). A path-MTU black hole shows here as a
//! path MTU equal to the interface MTU: the kernel never heard of the smaller link,
//! because the ICMP "fragmentation needed" / "packet too big" never came back.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Socket, Type};

/// The route's facts; each is `None` when the kernel would not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFacts {
    /// The local address the kernel picks for the destination.
    pub local: Option<IpAddr>,
    /// The interface that address lives on (or the one bound to).
    pub interface: Option<String>,
    /// That interface's MTU, bytes.
    pub interface_mtu: Option<u32>,
    /// The kernel's path MTU to the destination, bytes.
    pub path_mtu: Option<u32>,
}

/// Bytes of IP and TCP header (without options) in front of a TCP payload:
/// MSS = MTU - this.
pub fn tcp_ip_overhead(remote: IpAddr) -> u32 {
    if remote.is_ipv6() {
        60
    } else {
        40
    }
}

/// Reads the route's facts for `remote`, bound to `interface` / `source_ip` the
/// way the probe's TCP connections are. Never fails: what cannot be read is `None`.
pub fn facts(remote: IpAddr, interface: Option<&str>, source_ip: Option<IpAddr>) -> RouteFacts {
    let mut out = RouteFacts {
        interface: interface.map(str::to_string),
        ..RouteFacts::default()
    };
    let Ok(socket) = connected_udp(remote, interface, source_ip) else {
        return out;
    };
    out.local = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map(|a| a.ip());
    out.path_mtu = path_mtu(&socket, remote.is_ipv6()).ok();
    if out.interface.is_none() {
        out.interface = out.local.and_then(interface_of);
    }
    out.interface_mtu = out
        .interface
        .as_deref()
        .and_then(|name| interface_mtu(&socket, name).ok());
    out
}

fn connected_udp(
    remote: IpAddr,
    interface: Option<&str>,
    source_ip: Option<IpAddr>,
) -> io::Result<Socket> {
    let domain = if remote.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::DGRAM, None)?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(iface) = interface {
        socket.bind_device(Some(iface.as_bytes()))?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = interface;
    if let Some(src) = source_ip.filter(|s| s.is_ipv6() == remote.is_ipv6()) {
        socket.bind(&SocketAddr::new(src, 0).into())?;
    }
    // Any port: a UDP connect only picks the route.
    socket.connect(&SocketAddr::new(remote, 9).into())?;
    Ok(socket)
}

fn path_mtu(socket: &Socket, v6: bool) -> io::Result<u32> {
    let (level, name) = if v6 {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    } else {
        (libc::IPPROTO_IP, libc::IP_MTU)
    };
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) on an open socket into a c_int-sized buffer whose size is passed.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(value).map_err(|_| io::Error::other("negative MTU"))
}

/// The name of the interface holding `local` (getifaddrs: the calling thread's
/// network namespace).
fn interface_of(local: IpAddr) -> Option<String> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `head` with a list freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    // Bounded: an interface list is finite; cap it anyway.
    for _ in 0..4096 {
        if cur.is_null() {
            break;
        }
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it states.
        let addr = unsafe { sockaddr_ip(ifa.ifa_addr) };
        if addr == Some(local) {
            // SAFETY: ifa_name is a NUL-terminated string owned by the list.
            let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
            found = Some(name.to_string_lossy().into_owned());
            break;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// # Safety
/// `sa` must point to a valid sockaddr whose size fits its `sa_family`.
unsafe fn sockaddr_ip(sa: *const libc::sockaddr) -> Option<IpAddr> {
    match (*sa).sa_family as libc::c_int {
        libc::AF_INET => {
            let sin = &*(sa as *const libc::sockaddr_in);
            Some(IpAddr::from(sin.sin_addr.s_addr.to_ne_bytes()))
        }
        libc::AF_INET6 => {
            let sin6 = &*(sa as *const libc::sockaddr_in6);
            Some(IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}

fn interface_mtu(socket: &Socket, name: &str) -> io::Result<u32> {
    let bytes = name.as_bytes();
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::other("interface name too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifru_mtu of the ifreq passed.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFMTU the union holds the MTU.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    u32::try_from(mtu).map_err(|_| io::Error::other("negative MTU"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_routes_through_lo_with_its_mtu() {
        let f = facts("127.0.0.1".parse().unwrap(), None, None);
        assert_eq!(f.local, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(f.interface.as_deref(), Some("lo"));
        let mtu = f.interface_mtu.expect("lo has an MTU");
        assert!(mtu >= 1280, "{mtu}");
        // The kernel's path MTU to a local address is the interface's (capped at
        // the largest IPv4 packet, 65535, for lo's 65536).
        let pmtu = f.path_mtu.expect("a path MTU");
        assert!(pmtu <= mtu && pmtu >= 1280, "{pmtu} vs {mtu}");
    }

    #[test]
    fn overhead_by_family() {
        assert_eq!(tcp_ip_overhead("10.0.0.1".parse().unwrap()), 40);
        assert_eq!(tcp_ip_overhead("::1".parse().unwrap()), 60);
    }
}
