//! Benchmark suite for egress-proxy: the real release binary on loopback against origins run
//! here. See benches/README.md.
//!
//! cargo bench --bench proxy [--no-default-features] -- [--quick] [--json] [--rounds N]
//!     [--only bulk,setup,transparent,memory,decide]

#[path = "../tests/common/bound.rs"]
mod bound;
#[path = "proxy/decide.rs"]
mod decide;
#[path = "proxy/harness.rs"]
mod harness;
#[path = "proxy/net.rs"]
mod net;
#[path = "proxy/report.rs"]
mod report;

use std::time::Duration;

use serde_json::{json, Value};

use harness::{ProxyProc, ProxySpec};
use net::{Dir, Route};
use report::{fmt, median, percentile, Row, Target};

const MIB: u64 = 1024 * 1024;

struct Args {
    quick: bool,
    json: bool,
    rounds: usize,
    only: Option<Vec<String>>,
}

impl Args {
    fn parse() -> Args {
        let mut a = Args {
            quick: false,
            json: false,
            rounds: 0,
            only: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => a.quick = true,
                "--json" => a.json = true,
                "--rounds" => a.rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(0),
                "--only" => a.only = it.next().map(|v| v.split(',').map(str::to_owned).collect()),
                "--help" | "-h" => {
                    eprintln!(
                        "cargo bench --bench proxy -- [--quick] [--json] [--rounds N] \
                         [--only bulk,setup,transparent,memory,decide]"
                    );
                    std::process::exit(0);
                }
                // `cargo bench` passes --bench; filters and other flags are ignored.
                _ => {}
            }
        }
        if a.rounds == 0 {
            a.rounds = if a.quick { 3 } else { 5 };
        }
        a.rounds = a.rounds.max(3);
        a
    }

    fn wants(&self, part: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|p| p == part))
    }
}

/// Sizes for a full or `--quick` run.
struct Plan {
    bulk_one: u64,
    bulk_each_of_8: u64,
    setup_count: usize,
    setup_limit: Duration,
    idle: [usize; 2],
    decide_count: usize,
}

struct Bench {
    args: Args,
    plan: Plan,
    rows: Vec<Row>,
    details: Vec<Value>,
    notes: Vec<String>,
}

fn log(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}

impl Bench {
    fn row(
        &mut self,
        metric: impl Into<String>,
        unit: &'static str,
        direct: Option<f64>,
        proxied: f64,
        target: Option<Target>,
    ) {
        self.rows.push(Row {
            metric: metric.into(),
            unit,
            direct,
            proxied,
            target,
        });
    }

    /// Bulk throughput, direct and proxied rounds interleaved; proxy CPU per GB.
    async fn bulk(
        &mut self,
        label: &str,
        proxy: &ProxyProc,
        direct: &Route,
        proxied: &Route,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) {
        let mut cpu_total = 0.0;
        let mut bytes_total = 0u64;
        // This process (client + origin) in direct rounds: one send and one recv per byte,
        // the same syscall work the proxy does per byte; the kernel's floor on this machine.
        let me = std::process::id();
        let (mut own_cpu, mut own_bytes) = (0.0, 0u64);
        let (mut busy_cpu, mut busy_secs, mut gen_cpu) = (0.0, 0.0, 0.0);
        let limit = Duration::from_secs(30);
        for (tunnels, each) in [(1usize, self.plan.bulk_one), (8, self.plan.bulk_each_of_8)] {
            for dir in [Dir::Upload, Dir::Download] {
                let mut d = Vec::new();
                let mut p = Vec::new();
                // Warm-up, unrecorded: a small transfer each way.
                let _ = net::bulk(direct, tls, tunnels, each / 16, dir, limit).await;
                let _ = net::bulk(proxied, tls, tunnels, each / 16, dir, limit).await;
                for _ in 0..self.args.rounds {
                    for route in [direct, proxied] {
                        let cpu0 = proxy.cpu_secs();
                        let own0 = harness::cpu_secs_of(me).unwrap_or(f64::NAN);
                        match net::bulk(route, tls, tunnels, each, dir, limit).await {
                            Ok(b) => {
                                let gbps = b.bytes as f64 * 8.0 / b.secs / 1e9;
                                if b.bytes < each * tunnels as u64 {
                                    self.notes.push(format!(
                                        "{label} bulk {tunnels}x{} {}: round hit the {}s limit after {} bytes",
                                        dir.name(),
                                        if route.is_direct() { "direct" } else { "proxied" },
                                        limit.as_secs(),
                                        b.bytes
                                    ));
                                }
                                if route.is_direct() {
                                    own_cpu += harness::cpu_secs_of(me).unwrap_or(f64::NAN) - own0;
                                    own_bytes += b.bytes;
                                    d.push(gbps);
                                } else {
                                    let used = proxy.cpu_secs() - cpu0;
                                    gen_cpu += harness::cpu_secs_of(me).unwrap_or(f64::NAN) - own0;
                                    busy_cpu += used;
                                    busy_secs += b.secs;
                                    tokio::time::sleep(Duration::from_millis(50)).await;
                                    cpu_total += proxy.cpu_secs() - cpu0;
                                    bytes_total += b.bytes;
                                    p.push(gbps);
                                }
                            }
                            Err(e) => {
                                log(format!("  {label} bulk round failed: {e}"));
                                self.notes.push(format!(
                                    "{label} bulk {tunnels} tunnel(s) {}: {e}",
                                    dir.name()
                                ));
                            }
                        }
                    }
                }
                let (md, mp) = (median(&d), median(&p));
                log(format!(
                    "  {label} bulk {tunnels} tunnel(s) {:8}: direct {} Gbit/s, proxied {} Gbit/s ({:.2}x)",
                    dir.name(),
                    fmt(md),
                    fmt(mp),
                    mp / md
                ));
                self.details.push(json!({
                    "kind": "bulk", "listener": label, "tunnels": tunnels, "direction": dir.name(),
                    "bytes_per_tunnel": each, "direct_gbit_s": d, "proxied_gbit_s": p,
                }));
                let s = if tunnels == 1 { "" } else { "s" };
                self.row(
                    format!("{label}: bulk {} {tunnels} tunnel{s}", dir.name()),
                    "Gbit/s",
                    Some(md),
                    mp,
                    Some(Target::RatioAtLeast(0.90)),
                );
            }
        }
        let per_gb = cpu_total / (bytes_total as f64 / 1e9);
        let own_per_gb = own_cpu / (own_bytes as f64 / 1e9);
        let busy = busy_cpu / busy_secs * 100.0;
        let gen_busy = gen_cpu / busy_secs * 100.0;
        log(format!(
            "  {label} proxy CPU: {cpu_total:.2} s over {:.2} GB proxied = {per_gb:.3} CPU-s/GB \
             (busy {busy:.0}% of proxied round time, load generator {gen_busy:.0}%); direct client+origin: {own_per_gb:.3} CPU-s/GB",
            bytes_total as f64 / 1e9
        ));
        self.details.push(json!({
            "kind": "bulk_cpu", "listener": label, "proxy_cpu_s": cpu_total, "proxied_bytes": bytes_total,
            "proxy_busy_pct": busy, "load_generator_busy_pct": gen_busy, "direct_own_cpu_s": own_cpu, "direct_bytes": own_bytes,
        }));
        // For plain TCP the direct column is client+origin's CPU per GB in direct rounds
        // (one send + one recv per byte, like the proxy); with TLS it would include crypto.
        self.row(
            format!("{label}: proxy CPU per GB (bulk)"),
            "CPU-s/GB",
            tls.is_none().then_some(own_per_gb),
            per_gb,
            Some(Target::AtMost(0.30)),
        );
    }

    /// Tunnel set-up rate and time to first byte; proxy CPU per tunnel.
    async fn setup(
        &mut self,
        label: &str,
        proxy: &ProxyProc,
        direct: &Route,
        proxied: &Route,
        tls: &tokio_rustls::TlsConnector,
    ) {
        for clients in [1usize, 32] {
            let (count, limit) = (self.plan.setup_count, self.plan.setup_limit);
            let _ = net::setup_round(direct, tls, clients, count / 10, limit / 5).await;
            let _ = net::setup_round(proxied, tls, clients, count / 10, limit / 5).await;
            let mut rate = [Vec::new(), Vec::new()];
            let mut pct = [
                [Vec::new(), Vec::new(), Vec::new()],
                [Vec::new(), Vec::new(), Vec::new()],
            ];
            let (mut cpu, mut tunnels) = (0.0, 0usize);
            let mut failed = 0;
            for _ in 0..self.args.rounds {
                for (k, route) in [direct, proxied].into_iter().enumerate() {
                    let cpu0 = proxy.cpu_secs();
                    let mut r = net::setup_round(route, tls, clients, count, limit).await;
                    if k == 1 {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        cpu += proxy.cpu_secs() - cpu0;
                        tunnels += r.ttfb_us.len() + r.failed;
                    }
                    if r.failed > 0 {
                        failed += r.failed;
                        self.notes.push(format!(
                            "{label} set-up {clients} client(s) {}: {} failed, first: {}",
                            if k == 0 { "direct" } else { "proxied" },
                            r.failed,
                            r.first_error.as_deref().unwrap_or("?")
                        ));
                    }
                    rate[k].push(r.ttfb_us.len() as f64 / r.secs);
                    r.ttfb_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
                    for (j, p) in [0.50, 0.99, 0.999].into_iter().enumerate() {
                        pct[k][j].push(percentile(&r.ttfb_us, p) / 1e3);
                    }
                }
            }
            let m = |v: &Vec<f64>| median(v);
            log(format!(
                "  {label} set-up {clients:2} client(s): direct {}/s p50 {} p99 {} p999 {} ms | proxied {}/s p50 {} p99 {} p999 {} ms{}",
                fmt(m(&rate[0])),
                fmt(m(&pct[0][0])),
                fmt(m(&pct[0][1])),
                fmt(m(&pct[0][2])),
                fmt(m(&rate[1])),
                fmt(m(&pct[1][0])),
                fmt(m(&pct[1][1])),
                fmt(m(&pct[1][2])),
                if failed > 0 { format!(" ({failed} failed)") } else { String::new() }
            ));
            self.details.push(json!({
                "kind": "setup", "listener": label, "clients": clients,
                "direct_per_s": rate[0], "proxied_per_s": rate[1],
                "direct_ttfb_ms": {"p50": pct[0][0], "p99": pct[0][1], "p999": pct[0][2]},
                "proxied_ttfb_ms": {"p50": pct[1][0], "p99": pct[1][1], "p999": pct[1][2]},
                "proxy_cpu_s": cpu, "proxied_tunnels": tunnels, "failed": failed,
            }));
            let s = if clients == 1 { "" } else { "s" };
            let rate_target = (clients == 32).then_some(Target::RatioAtLeast(0.80));
            self.row(
                format!("{label}: set-up rate {clients} client{s}"),
                "tunnels/s",
                Some(m(&rate[0])),
                m(&rate[1]),
                rate_target,
            );
            for (j, name) in ["p50", "p99", "p999"].into_iter().enumerate() {
                let target = (clients == 1 && j == 1).then_some(Target::RatioAtMost(2.0));
                self.row(
                    format!("{label}: TTFB {name} {clients} client{s}"),
                    "ms",
                    Some(m(&pct[0][j])),
                    m(&pct[1][j]),
                    target,
                );
            }
            let per = cpu / tunnels.max(1) as f64 * 1e6;
            self.row(
                format!("{label}: proxy CPU per tunnel ({clients} client{s})"),
                "CPU-us",
                None,
                per,
                None,
            );
        }
    }

    /// Memory per idle tunnel, each N on a fresh proxy.
    async fn memory(&mut self, spec: &ProxySpec<'_>, tcp_authority: &str) {
        for n in self.plan.idle {
            let proxy = match ProxyProc::start(spec) {
                Ok(p) => p,
                Err(e) => {
                    self.notes
                        .push(format!("memory N={n}: proxy did not start: {e}"));
                    continue;
                }
            };
            let route = Route::Connect {
                proxy: proxy.explicit,
                authority: tcp_authority.to_owned(),
            };
            // Warm-up: the runtime, the log thread and the allocator's first arenas.
            match net::open_idle(&route, 64, 16, Duration::from_secs(30)).await {
                Ok(w) => drop(w),
                Err(e) => {
                    self.notes
                        .push(format!("memory N={n}: warm-up failed: {e}"));
                    continue;
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = proxy.rss_kib();
            let held = net::open_idle(&route, n, 64, Duration::from_secs(120)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = proxy.rss_kib();
            match held {
                Ok(held) => {
                    let per = (after as f64 - before as f64) / n as f64;
                    log(format!(
                        "  idle tunnels N={n}: RSS {before} -> {after} KiB = {per:.2} KiB/tunnel"
                    ));
                    self.details.push(json!({"kind": "idle", "n": n, "rss_before_kib": before, "rss_after_kib": after}));
                    self.row(
                        format!("memory per idle tunnel (N={n})"),
                        "KiB",
                        None,
                        per,
                        Some(Target::AtMost(8.0)),
                    );
                    drop(held);
                }
                Err(e) => {
                    log(format!("  idle tunnels N={n}: {e}"));
                    self.notes.push(format!("memory N={n}: {e}"));
                }
            }
        }
    }

    fn decide(&mut self) {
        let results = decide::run(&[3, 1_000, 10_000], self.plan.decide_count, 5);
        for r in &results {
            log(format!(
                "  decide, {:5} rules: hit {:.1} ns, miss {:.1} ns (config built in {:.1} ms)",
                r.rules, r.hit_ns, r.miss_ns, r.build_ms
            ));
            self.details.push(json!({"kind": "decide", "rules": r.rules, "hit_ns": r.hit_ns, "miss_ns": r.miss_ns, "build_ms": r.build_ms}));
        }
        let base = &results[0];
        self.row("decision hit, 3 rules", "ns", None, base.hit_ns, None);
        self.row("decision miss, 3 rules", "ns", None, base.miss_ns, None);
        for r in &results[1..] {
            let t = Some(Target::RatioAtMost(2.0));
            self.row(
                format!("decision hit, {} rules (vs 3)", r.rules),
                "ns",
                Some(base.hit_ns),
                r.hit_ns,
                t,
            );
            self.row(
                format!("decision miss, {} rules (vs 3)", r.rules),
                "ns",
                Some(base.miss_ns),
                r.miss_ns,
                t,
            );
        }
    }
}

fn main() {
    let placement = harness::place();
    let nofile = harness::raise_nofile();
    let args = Args::parse();
    let bin = match harness::proxy_bin() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let plan = if args.quick {
        Plan {
            bulk_one: 32 * MIB,
            bulk_each_of_8: 8 * MIB,
            setup_count: 300,
            setup_limit: Duration::from_secs(3),
            idle: [500, 2000],
            decide_count: 200_000,
        }
    } else {
        Plan {
            bulk_one: 256 * MIB,
            bulk_each_of_8: 64 * MIB,
            setup_count: 2000,
            setup_limit: Duration::from_secs(10),
            idle: [1000, 9000],
            decide_count: 1_000_000,
        }
    };
    let (model, kernel, rustc) = harness::machine();
    let load_start = harness::loadavg();
    log(format!("egress-proxy bench: {}", bin.display()));
    log(format!(
        "machine: {} CPUs, {model}, kernel {kernel}, {rustc}",
        placement.cpus
    ));
    log(format!("placement: {}", placement.note));
    log(format!(
        "RLIMIT_NOFILE (bench): {nofile}; load average at start: {load_start}"
    ));
    log(format!(
        "rounds: {} each of direct and proxied, interleaved; {}",
        args.rounds,
        if args.quick { "--quick" } else { "full" }
    ));

    let mut bench = Bench {
        args,
        plan,
        rows: Vec::new(),
        details: Vec::new(),
        notes: Vec::new(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let transparent_note = rt.block_on(run(&mut bench, &bin, placement.pinned.map(|p| p.0)));

    let load_end = harness::loadavg();
    let env = json!({
        "cpus": placement.cpus, "cpu_model": model, "kernel": kernel, "rustc": rustc,
        "placement": placement.note, "load_avg_start": load_start, "load_avg_end": load_end,
        "rounds": bench.args.rounds, "quick": bench.args.quick, "binary": bin.display().to_string(),
        "transparent": transparent_note,
    });
    let table = report::table(&bench.rows);
    let mut text = String::new();
    text += &format!("\nload average at start {load_start}, at end {load_end}\n");
    text += &format!("transparent rounds: {transparent_note}\n");
    for n in &bench.notes {
        text += &format!("note: {n}\n");
    }
    text += "\n";
    text += &table;
    if bench.args.json {
        eprint!("{text}");
        let out = json!({
            "environment": env,
            "results": report::rows_json(&bench.rows),
            "details": bench.details,
            "notes": bench.notes,
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap());
    } else {
        print!("{text}");
    }
}

async fn run(bench: &mut Bench, bin: &std::path::Path, proxy_cpu: Option<usize>) -> String {
    if bench.args.wants("decide") {
        log("decision cost (in-process, this CPU):");
        bench.decide();
    }
    let needs_proxy = ["bulk", "setup", "transparent", "memory"]
        .iter()
        .any(|p| bench.args.wants(p));
    if !needs_proxy {
        return "not run".into();
    }
    let (tcp_origin, _) = net::start_tcp_origin()
        .await
        .expect("starting the TCP origin");
    // The transparent listener dials port 443 when the connection was not redirected, so
    // the TLS origin takes 127.0.0.1:443 when it can (root); else a free port, named to the
    // proxy as the listener's default_port.
    let (tls_origin, transparent) =
        match net::start_tls_origin("127.0.0.1:443".parse().unwrap()).await {
            Ok(o) => (o, Some(None)),
            Err(e) => {
                let o = net::start_tls_origin("127.0.0.1:0".parse().unwrap())
                    .await
                    .expect("starting the TLS origin");
                log(format!(
                    "note: cannot bind 127.0.0.1:443 ({e}); trying transparent_tls default_port {}",
                    o.addr.port()
                ));
                let port = o.addr.port();
                (o, Some(Some(port)))
            }
        };
    let mut spec = ProxySpec {
        bin,
        tcp_origin_port: tcp_origin.port(),
        tls_origin_port: tls_origin.addr.port(),
        transparent,
        cpu: proxy_cpu,
    };
    let proxy = match ProxyProc::start(&spec) {
        Ok(p) => p,
        Err(e) if spec.transparent.is_some_and(|t| t.is_some()) => {
            log(format!(
                "note: proxy refused the default_port form ({e}); transparent rounds skipped"
            ));
            spec.transparent = None;
            ProxyProc::start(&spec).unwrap_or_else(|e| panic!("starting the proxy: {e}"))
        }
        Err(e) => panic!("starting the proxy: {e}"),
    };
    let transparent_note = match (spec.transparent, proxy.transparent) {
        (Some(None), Some(_)) => {
            "TLS origin on 127.0.0.1:443 (the transparent listener's default port)".to_owned()
        }
        (Some(Some(p)), Some(_)) => {
            format!("TLS origin on 127.0.0.1:{p}, transparent_tls default_port {p}")
        }
        _ => "skipped: no TLS origin on 443 and no default_port support".to_owned(),
    };
    log(format!(
        "proxy pid {} explicit {} transparent_tls {:?}",
        proxy.pid, proxy.explicit, proxy.transparent
    ));
    let tcp_authority = format!("origin.bench:{}", tcp_origin.port());
    let tls_authority = format!("origin.bench:{}", tls_origin.addr.port());
    let tcp_direct = Route::Direct(tcp_origin);
    let tcp_connect = Route::Connect {
        proxy: proxy.explicit,
        authority: tcp_authority.clone(),
    };
    let tls_direct = Route::Direct(tls_origin.addr);
    let tls_connect = Route::Connect {
        proxy: proxy.explicit,
        authority: tls_authority,
    };

    if bench.args.wants("bulk") {
        log("bulk throughput, CONNECT (plain TCP in the tunnel, tls: any):");
        bench
            .bulk("CONNECT", &proxy, &tcp_direct, &tcp_connect, None)
            .await;
    }
    if bench.args.wants("setup") {
        log("tunnel set-up, CONNECT + TLS (require_sni):");
        bench
            .setup(
                "CONNECT",
                &proxy,
                &tls_direct,
                &tls_connect,
                &tls_origin.connector,
            )
            .await;
    }
    if bench.args.wants("transparent") {
        if let Some(addr) = proxy.transparent {
            let t = Route::Transparent(addr);
            log("transparent TLS listener (SNI):");
            bench
                .setup("SNI", &proxy, &tls_direct, &t, &tls_origin.connector)
                .await;
            bench
                .bulk("SNI", &proxy, &tls_direct, &t, Some(&tls_origin.connector))
                .await;
        } else {
            log(format!("transparent rounds: {transparent_note}"));
        }
    }
    let log_bytes = proxy.log_bytes.load(std::sync::atomic::Ordering::Relaxed);
    let mut proxy = proxy;
    if !proxy.alive() {
        bench.notes.push(format!(
            "the proxy exited during the run; stderr:\n{}",
            proxy.stderr()
        ));
    }
    log(format!(
        "decision log: {log_bytes} bytes read from the proxy's stdout"
    ));
    drop(proxy);
    if bench.args.wants("memory") {
        log("memory per idle tunnel (CONNECT, plain TCP, fresh proxy per N):");
        bench.memory(&spec, &tcp_authority).await;
    }
    transparent_note
}
