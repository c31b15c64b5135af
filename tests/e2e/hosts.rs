//! Test hosts: N network namespaces on one bridge, each with its own address, and the faults
//! a real network has between them.
//!
//! - [`Hosts::new`] makes namespaces `tdr<pid><k>h<i>` (`<k>` a letter per harness of this
//!   process) with one veth each (`eth0` inside) on the bridge `tdrbr<pid><k>`, and gives host `i` the address `10.77.<s>.<i + 1>/24`, where `<s>`
//!   is a subnet no other live harness uses; the bridge itself (the test process's side) is
//!   `10.77.<s>.254`. Nothing leaves the machine: the bridge has no other port and no route
//!   out.
//! - [`Hosts::partition`] splits the hosts into groups that cannot reach each other (both
//!   directions); [`Hosts::block`] cuts one direction only; [`Hosts::heal`] removes every cut.
//!   Cuts are nftables rules in each namespace's own `inet tendr_test` table, matched on the
//!   peers' addresses, so the test process still reaches every host's RPC through the bridge.
//! - [`Hosts::bandwidth`] limits what a host sends with `tc tbf`.
//! - Latency, jitter, loss, duplication and reordering are not made here (this kernel has no
//!   netem): the nodes' own `link_shaping` config puts them under the QUIC socket.
//! - [`Hosts::command`] runs a program inside a host (`ip netns exec`).
//!
//! Cleanup: dropping [`Hosts`] (also while a failed test unwinds) kills every process left in
//! its namespaces and deletes the namespaces and the bridge. A run that was killed outright
//! cannot drop anything, so [`Hosts::new`] first removes what harnesses of dead processes left.
//!
//! It needs root, `ip`, `nft` and `tc`; it installs `iproute2` and `nftables` with apt-get
//! when they are missing. When the namespaces cannot be made it panics with the reason: a test
//! that needs hosts never passes without them.

use std::net::Ipv4Addr;
use std::process::Command;

/// Names of everything a harness makes start with this.
const PREFIX: &str = "tdr";
const NFT_TABLE: &str = "tendr_test";

pub struct Hosts {
    /// `<pid><k>`: what every name of this harness carries.
    tag: String,
    subnet: u8,
    n: usize,
}

/// Harnesses made by this process so far (their letter `<k>`).
static MADE: std::sync::Mutex<u8> = std::sync::Mutex::new(0);

/// Runs `program args`; its stdout, or the reason it failed.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `{program}`: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs `program args`, panicking with the reason when it fails.
fn must(program: &str, args: &[&str]) -> String {
    run(program, args).unwrap_or_else(|e| panic!("test hosts: {e}"))
}

/// `ip`, `nft` and `tc` are there, installing them with apt-get if not.
fn ensure_tools() -> Result<(), String> {
    let missing = |tool: &str| run("sh", &["-c", &format!("command -v {tool}")]).is_err();
    if ["ip", "nft", "tc"].iter().any(|t| missing(t)) {
        let _ = run("apt-get", &["update", "-qq"]);
        run("apt-get", &["install", "-y", "-qq", "iproute2", "nftables"])
            .map_err(|e| format!("`ip`, `nft` or `tc` is missing and could not be installed: {e}"))?;
    }
    Ok(())
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a name `tdr<pid><k>h<i>` or `tdrbr<pid><k>`.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest.strip_prefix("br").unwrap_or(rest);
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Kills every process in namespace `ns` and deletes it.
fn remove_namespace(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = run("kill", &["-9", pid]);
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
}

/// Removes namespaces and bridges left by harnesses whose process is gone.
fn remove_leftovers() {
    let namespaces = run("ip", &["netns", "list"]).unwrap_or_default();
    for ns in namespaces.lines().filter_map(|l| l.split_whitespace().next()) {
        if owner(ns).is_some_and(|p| !alive(p)) {
            eprintln!("test hosts: removing namespace {ns} left by an earlier run");
            remove_namespace(ns);
        }
    }
    let links = run("ip", &["-o", "link", "show", "type", "bridge"]).unwrap_or_default();
    for name in links.lines().filter_map(|l| l.split(':').nth(1)).map(str::trim) {
        if name.starts_with(&format!("{PREFIX}br")) && owner(name).is_some_and(|p| !alive(p)) {
            eprintln!("test hosts: removing bridge {name} left by an earlier run");
            let _ = run("ip", &["link", "del", name]);
        }
    }
}

/// A /24 in 10.77.0.0/16 that no interface on this machine has yet.
fn free_subnet(pid: u32) -> Result<u8, String> {
    let addrs = run("ip", &["-o", "-4", "addr", "show"])?;
    (0..250u32)
        .map(|k| ((pid + k) % 250 + 1) as u8)
        .find(|s| !addrs.contains(&format!("10.77.{s}.")))
        .ok_or_else(|| "every 10.77.x.0/24 is taken".into())
}

impl Hosts {
    /// Makes `n` hosts (at most 99); panics with the reason when it cannot.
    pub fn new(n: usize) -> Hosts {
        assert!((1..=99).contains(&n), "test hosts: {n} hosts (1-99)");
        if let Err(e) = ensure_tools() {
            panic!("test hosts: {e}; these tests need root and iproute2 + nftables");
        }
        // One harness at a time picks its subnet and builds (names and subnets stay unique).
        let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
        remove_leftovers();
        let pid = std::process::id();
        let tag = format!("{pid}{}", (b'a' + *made % 26) as char);
        *made += 1;
        let subnet = free_subnet(pid).unwrap_or_else(|e| panic!("test hosts: {e}"));
        let hosts = Hosts { tag, subnet, n };
        if let Err(e) = hosts.build() {
            panic!("test hosts: cannot make {n} network namespaces (they need root): {e}");
        }
        hosts
    }

    fn bridge(&self) -> String {
        format!("{PREFIX}br{}", self.tag)
    }

    /// The namespace of host `i` (0-based).
    pub fn ns(&self, i: usize) -> String {
        format!("{PREFIX}{}h{i}", self.tag)
    }

    /// The address of host `i` (0-based).
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        assert!(i < self.n);
        Ipv4Addr::new(10, 77, self.subnet, i as u8 + 1)
    }

    fn build(&self) -> Result<(), String> {
        let br = self.bridge();
        run("ip", &["link", "add", &br, "type", "bridge"])?;
        run(
            "ip",
            &["addr", "add", &format!("10.77.{}.254/24", self.subnet), "dev", &br],
        )?;
        run("ip", &["link", "set", &br, "up"])?;
        for i in 0..self.n {
            let (ns, veth) = (self.ns(i), format!("{PREFIX}{}v{i}", self.tag));
            run("ip", &["netns", "add", &ns])?;
            run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )?;
            run("ip", &["link", "set", &veth, "master", &br])?;
            run("ip", &["link", "set", &veth, "up"])?;
            let addr = format!("{}/24", self.addr(i));
            for args in [
                &["addr", "add", &addr, "dev", "eth0"][..],
                &["link", "set", "eth0", "up"],
                &["link", "set", "lo", "up"],
            ] {
                run("ip", &[&["-n", &ns][..], args].concat())?;
            }
            let chain =
                format!("add chain inet {NFT_TABLE} input {{ type filter hook input priority 0; policy accept; }}");
            run("ip", &["netns", "exec", &ns, "nft", "add", "table", "inet", NFT_TABLE])?;
            run("ip", &["netns", "exec", &ns, "nft", &chain])?;
        }
        Ok(())
    }

    /// A command that runs `program` inside host `i`.
    pub fn command(&self, i: usize, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(i), program]);
        c
    }

    /// A UDP socket bound to `port` on host `i`'s address, made inside its namespace (a
    /// socket stays in the namespace it was made in, whichever thread uses it later).
    pub fn udp_socket(&self, i: usize, port: u16) -> std::net::UdpSocket {
        let path = format!("/var/run/netns/{}", self.ns(i));
        let addr = std::net::SocketAddr::from((self.addr(i), port));
        std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("test hosts: {path}: {e}"));
            // SAFETY: setns on this short-lived thread only; the fd is open for the call.
            let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "test hosts: setns {path}: {}", std::io::Error::last_os_error());
            std::net::UdpSocket::bind(addr).unwrap_or_else(|e| panic!("test hosts: bind {addr}: {e}"))
        })
        .join()
        .expect("the setns thread")
    }

    /// From now on nothing host `from` sends reaches host `to` (the other way is untouched).
    pub fn block(&self, from: usize, to: usize) {
        let rule = format!("add rule inet {NFT_TABLE} input ip saddr {} drop", self.addr(from));
        let args: Vec<&str> = rule.split(' ').collect();
        must("ip", &[&["netns", "exec", &self.ns(to), "nft"][..], &args].concat());
    }

    /// Splits the hosts into `groups` (every host in exactly one): no traffic between groups,
    /// either way. Cuts made before stay.
    pub fn partition(&self, groups: &[&[usize]]) {
        let mut seen: Vec<usize> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..self.n).collect::<Vec<_>>(),
            "groups must cover every host once"
        );
        for (a, ga) in groups.iter().enumerate() {
            for gb in &groups[a + 1..] {
                for &x in *ga {
                    for &y in *gb {
                        self.block(x, y);
                        self.block(y, x);
                    }
                }
            }
        }
    }

    /// Removes every cut.
    pub fn heal(&self) {
        for i in 0..self.n {
            must(
                "ip",
                &[
                    "netns",
                    "exec",
                    &self.ns(i),
                    "nft",
                    "flush",
                    "chain",
                    "inet",
                    NFT_TABLE,
                    "input",
                ],
            );
        }
    }

    /// The cuts in force on host `i` (the source addresses it drops).
    pub fn cuts(&self, i: usize) -> Vec<Ipv4Addr> {
        let text = must(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns(i),
                "nft",
                "list",
                "chain",
                "inet",
                NFT_TABLE,
                "input",
            ],
        );
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("ip saddr ")?.split(' ').next()?.parse().ok())
            .collect()
    }

    /// Limits what host `i` sends to `kbit` kilobits per second (`tc tbf`); `None` lifts it.
    pub fn bandwidth(&self, i: usize, kbit: Option<u32>) {
        let ns = self.ns(i);
        match kbit {
            Some(k) => {
                let rate = format!("{k}kbit");
                must(
                    "ip",
                    &[
                        "netns", "exec", &ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", &rate,
                        "burst", "32kbit", "latency", "400ms",
                    ],
                );
            }
            None => {
                let _ = run(
                    "ip",
                    &["netns", "exec", &ns, "tc", "qdisc", "del", "dev", "eth0", "root"],
                );
            }
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for i in 0..self.n {
            remove_namespace(&self.ns(i));
        }
        let _ = run("ip", &["link", "del", &self.bridge()]);
    }
}

/// Whether a datagram from host `a` reaches host `b` (each bound on `port` with `sockets`).
fn reaches(h: &Hosts, sockets: &[std::net::UdpSocket], port: u16, a: usize, b: usize) -> bool {
    let to = std::net::SocketAddr::from((h.addr(b), port));
    sockets[a].send_to(&[a as u8], to).expect("send");
    let mut buf = [0u8; 8];
    sockets[b]
        .set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    while let Ok((_, from)) = sockets[b].recv_from(&mut buf) {
        if from.ip() == h.addr(a) {
            return true;
        }
    }
    false
}

#[test]
fn test_hosts_cut_and_heal_what_they_say_and_leave_nothing_behind() {
    // What a run killed outright would have left: a namespace of a process that is gone.
    let dead = (4_000_000..4_100_000).find(|p| !alive(*p)).unwrap();
    let stale = format!("{PREFIX}{dead}ah0");
    must("ip", &["netns", "add", &stale]);
    let h = Hosts::new(3);
    let namespaces = must("ip", &["netns", "list"]);
    assert!(
        !namespaces.contains(&stale),
        "a dead run's namespace was left: {namespaces}"
    );
    let port = 4_000;
    let s: Vec<_> = (0..3).map(|i| h.udp_socket(i, port)).collect();
    let all = |want: bool| {
        for a in 0..3 {
            for b in 0..3 {
                if a != b {
                    assert_eq!(reaches(&h, &s, port, a, b), want, "{a} -> {b}");
                }
            }
        }
    };
    all(true);
    h.block(0, 1);
    assert!(
        !reaches(&h, &s, port, 0, 1) && reaches(&h, &s, port, 1, 0),
        "one way only"
    );
    assert_eq!(h.cuts(1), vec![h.addr(0)]);
    h.heal();
    all(true);
    h.partition(&[&[0], &[1, 2]]);
    assert!(reaches(&h, &s, port, 1, 2) && reaches(&h, &s, port, 2, 1));
    for (a, b) in [(0, 1), (1, 0), (0, 2), (2, 0)] {
        assert!(!reaches(&h, &s, port, a, b), "{a} -> {b} across the partition");
    }
    h.heal();
    all(true);
    // 100 kbit/s with a 400 ms queue: of 200 kB sent at once, most is dropped.
    h.bandwidth(0, Some(100));
    let to = std::net::SocketAddr::from((h.addr(1), port));
    for _ in 0..200 {
        s[0].send_to(&[7u8; 1000], to).unwrap();
    }
    let mut got = 0;
    let mut buf = [0u8; 1500];
    s[1].set_read_timeout(Some(std::time::Duration::from_millis(1500)))
        .unwrap();
    while let Ok(n) = s[1].recv(&mut buf) {
        got += usize::from(n == 1000);
    }
    assert!((1..=60).contains(&got), "{got} of 200 datagrams passed 100 kbit/s");
    h.bandwidth(0, None);
    all(true);
    let names: Vec<String> = (0..3).map(|i| h.ns(i)).chain([h.bridge()]).collect();
    drop(s);
    drop(h);
    let left = must("ip", &["netns", "list"]) + &must("ip", &["-o", "link", "show"]);
    for n in names {
        assert!(!left.contains(&n), "{n} was left behind");
    }
}
