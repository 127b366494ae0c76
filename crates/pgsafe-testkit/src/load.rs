//! Write load that remembers what committed, to prove later that nothing committed was lost.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::{Client, NoTls, Transaction};

use crate::cluster::Cluster;

/// What [`LoadGenerator::start_with`] does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Client threads, each with its own connection.
    pub clients: usize,
    /// The table written to (created if missing). One generator per table at a time.
    pub table: String,
    /// Create the table in this tablespace (e.g. `ts1`).
    pub tablespace: Option<String>,
    /// Longest random `val` text in bytes (values above ~2 kB get TOASTed).
    pub max_value_len: usize,
    /// Pause of each client after each transaction (throttling; none by default).
    pub pause: Duration,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            clients: 4,
            table: "pgsafe_load".into(),
            tablespace: None,
            max_value_len: 300,
            pause: Duration::ZERO,
        }
    }
}

/// One committed change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    /// The row's `version` column became this.
    Update(i32),
    Delete,
}

/// A committed change, with the order in which commits were acknowledged (across all clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub seq: u64,
    pub id: i64,
    pub op: Op,
}

/// N client threads running small transactions: each inserts 1–3 rows and sometimes updates or
/// deletes one of its earlier committed rows; about one transaction in 20 rolls back. Client
/// threads end on [`LoadGenerator::stop`] or when their connection breaks (the server stopped
/// or crashed), so a test can crash the server under load and then collect the report.
pub struct LoadGenerator {
    table: String,
    id_base: i64,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    handles: Vec<JoinHandle<ClientLog>>,
}

#[derive(Debug, Default)]
struct ClientLog {
    events: Vec<Event>,
    uncertain: Vec<i64>,
    errors: Vec<String>,
    rollbacks: u64,
    /// Highest id this client used (committed or not).
    max_id: i64,
}

impl LoadGenerator {
    /// Starts `clients` threads writing to table `pgsafe_load`.
    pub fn start(cluster: &Cluster, clients: usize) -> LoadGenerator {
        Self::start_with(
            cluster,
            LoadOptions {
                clients,
                ..LoadOptions::default()
            },
        )
    }

    pub fn start_with(cluster: &Cluster, opts: LoadOptions) -> LoadGenerator {
        assert!(
            opts.clients > 0,
            "a load generator needs at least one client"
        );
        assert!(
            opts.table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "table name {:?} must be a plain identifier",
            opts.table
        );
        let ts = opts
            .tablespace
            .as_ref()
            .map(|t| format!(" TABLESPACE {t}"))
            .unwrap_or_default();
        cluster.execute(&format!(
            "CREATE TABLE IF NOT EXISTS {} (id bigint PRIMARY KEY, client int NOT NULL, \
             version int NOT NULL DEFAULT 0, val text NOT NULL, \
             created timestamptz NOT NULL DEFAULT now()){ts}",
            opts.table
        ));
        let stop = Arc::new(AtomicBool::new(false));
        let seq = Arc::new(AtomicU64::new(0));
        static RUNS: AtomicU64 = AtomicU64::new(0);
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32)
            ^ RUNS
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0xD6E8_FEB8_6659_FD93);
        // Each generator writes ids `run << 32 | n` for a random run number, so generators never
        // collide (on one table, or after a crash) and each report checks only its own rows.
        let run = 1 + (Rng::new(seed).next() % ((1 << 31) - 1)) as i64;
        let id_base = run << 32;
        let handles = (0..opts.clients)
            .map(|i| {
                let w = Worker {
                    config: cluster.pg_config(),
                    table: opts.table.clone(),
                    index: i as i64,
                    clients: opts.clients as i64,
                    id_base,
                    max_len: opts.max_value_len.max(1),
                    pause: opts.pause,
                    stop: stop.clone(),
                    seq: seq.clone(),
                    max_id: id_base,
                    rng: Rng::new(seed ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                };
                std::thread::Builder::new()
                    .name(format!("pgsafe-load-{i}"))
                    .spawn(move || w.run())
                    .expect("spawning a load thread")
            })
            .collect();
        LoadGenerator {
            table: opts.table,
            id_base,
            stop,
            seq,
            handles,
        }
    }

    /// Commits acknowledged so far (all clients).
    pub fn transactions(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// A point in the commit order: every commit acknowledged before this call has a smaller
    /// sequence number. Take it just before a backup's stop call, and
    /// [`LoadReport::verify_at`] checks exactly what the backup must contain.
    pub fn mark(&self) -> u64 {
        self.transactions()
    }

    /// True while at least one client thread is still running.
    pub fn is_running(&self) -> bool {
        self.handles.iter().any(|h| !h.is_finished())
    }

    /// Waits until at least `n` transactions committed; panics after `limit` or if every client
    /// gave up.
    pub fn wait_for_transactions(&self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.transactions() < n {
            if !self.is_running() {
                panic!(
                    "all load clients stopped after {} transactions (waiting for {n})",
                    self.transactions()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "only {} of {n} load transactions committed within {limit:?}",
                    self.transactions()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the clients (each finishes its current transaction) and reports what committed.
    pub fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        let mut report = LoadReport {
            table: self.table.clone(),
            id_base: self.id_base,
            id_max: self.id_base,
            committed_ids: BTreeSet::new(),
            deleted_ids: BTreeSet::new(),
            uncertain_ids: BTreeSet::new(),
            versions: BTreeMap::new(),
            transactions: 0,
            rollbacks: 0,
            errors: Vec::new(),
            events: Vec::new(),
        };
        for h in self.handles.drain(..) {
            let log = h
                .join()
                .unwrap_or_else(|_| panic!("a load client thread panicked"));
            report.events.extend(log.events);
            report.uncertain_ids.extend(log.uncertain);
            report.errors.extend(log.errors);
            report.rollbacks += log.rollbacks;
            report.id_max = report.id_max.max(log.max_id);
        }
        report.events.sort_by_key(|e| e.seq);
        let mut seqs = BTreeSet::new();
        for e in &report.events {
            seqs.insert(e.seq);
            match e.op {
                Op::Insert => {
                    report.committed_ids.insert(e.id);
                    report.versions.insert(e.id, 0);
                }
                Op::Update(v) => {
                    report.versions.insert(e.id, v);
                }
                Op::Delete => {
                    report.deleted_ids.insert(e.id);
                    report.versions.remove(&e.id);
                }
            }
        }
        report.transactions = seqs.len() as u64;
        report
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

/// What a [`LoadGenerator`] did.
#[derive(Debug, Clone)]
pub struct LoadReport {
    pub table: String,
    /// This generator used ids from `id_base + 1` to `id_max` (committed or not); `id_base` is
    /// a random multiple of 2^32.
    pub id_base: i64,
    pub id_max: i64,
    /// Ids whose insert committed.
    pub committed_ids: BTreeSet<i64>,
    /// Ids whose delete committed.
    pub deleted_ids: BTreeSet<i64>,
    /// Ids touched by a transaction whose commit outcome is unknown (the connection broke during
    /// COMMIT): they may or may not reflect that transaction.
    pub uncertain_ids: BTreeSet<i64>,
    /// The last committed `version` of every committed, not deleted id.
    pub versions: BTreeMap<i64, i32>,
    /// Committed transactions.
    pub transactions: u64,
    pub rollbacks: u64,
    /// Why clients stopped early or transactions failed (expected when the server was stopped).
    pub errors: Vec<String>,
    /// Every committed change, in acknowledgement order.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Present(i32),
    Absent,
}

impl LoadReport {
    /// Ids that must exist: committed and not deleted.
    pub fn live_ids(&self) -> BTreeSet<i64> {
        self.committed_ids
            .difference(&self.deleted_ids)
            .copied()
            .collect()
    }

    /// Checks that the server behind `client` holds every committed change: each committed and
    /// not deleted row is present with its last committed version, each committed delete is
    /// absent, and there is no row whose insert never committed. Changes of transactions with
    /// unknown outcome may be either way.
    pub fn verify(&self, client: &mut Client) -> Result<(), String> {
        self.verify_at(client, u64::MAX)
    }

    /// Like [`LoadReport::verify`], for a server that holds at least every commit acknowledged
    /// before `mark` ([`LoadGenerator::mark`]) and possibly some later ones: a restored backup.
    pub fn verify_at(&self, client: &mut Client, mark: u64) -> Result<(), String> {
        let sql = format!(
            "SELECT id, version FROM {} WHERE id > $1 AND id <= $2",
            self.table
        );
        let rows = client
            .query(&sql, &[&self.id_base, &self.id_max])
            .map_err(|e| format!("reading {}: {e}", self.table))?;
        let actual: HashMap<i64, i32> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();

        let mut at_mark: HashMap<i64, State> = HashMap::new();
        let mut later: HashMap<i64, Vec<Op>> = HashMap::new();
        for e in &self.events {
            if e.seq < mark {
                let s = match e.op {
                    Op::Insert => State::Present(0),
                    Op::Update(v) => State::Present(v),
                    Op::Delete => State::Absent,
                };
                at_mark.insert(e.id, s);
            } else {
                later.entry(e.id).or_default().push(e.op);
            }
        }
        let mut problems = Vec::new();
        let mut missing = 0usize;
        for (&id, &state) in &at_mark {
            let row = actual.get(&id).copied();
            let unsure = self.uncertain_ids.contains(&id);
            let later_ops = later.get(&id).map(Vec::as_slice).unwrap_or(&[]);
            let may_be_deleted = unsure || later_ops.contains(&Op::Delete);
            let exact = !unsure && later_ops.is_empty();
            match (state, row) {
                (State::Present(v), Some(got)) if got == v || (!exact && got > v) => {}
                (State::Present(_), None) if may_be_deleted => {}
                (State::Present(v), None) => {
                    missing += 1;
                    problems.push(format!("row {id} (version {v}) committed but missing"));
                }
                (State::Present(v), Some(got)) => problems.push(format!(
                    "row {id} has version {got}, committed version is {v}"
                )),
                (State::Absent, None) => {}
                (State::Absent, Some(_)) => {
                    problems.push(format!("row {id} was deleted (committed) but is present"))
                }
            }
        }
        let known: BTreeSet<i64> = self.events.iter().map(|e| e.id).collect();
        for &id in actual.keys() {
            if !known.contains(&id) && !self.uncertain_ids.contains(&id) {
                problems.push(format!(
                    "row {id} is present but its insert never committed"
                ));
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        problems.sort();
        let total = problems.len();
        problems.truncate(10);
        Err(format!(
            "{total} problems in {} ({missing} committed rows missing; {} rows found, {} \
             transactions committed, {} uncertain ids): {}",
            self.table,
            actual.len(),
            self.transactions,
            self.uncertain_ids.len(),
            problems.join("; ")
        ))
    }
}

struct Worker {
    config: postgres::Config,
    table: String,
    index: i64,
    clients: i64,
    id_base: i64,
    max_len: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
    seq: Arc<AtomicU64>,
    rng: Rng,
    max_id: i64,
}

impl Worker {
    fn run(mut self) -> ClientLog {
        let mut log = ClientLog::default();
        let mut client = match self.config.connect(NoTls) {
            Ok(c) => c,
            Err(e) => {
                log.errors
                    .push(format!("client {}: connect: {e}", self.index));
                return log;
            }
        };
        let mut next: i64 = 0;
        let mut live: Vec<i64> = Vec::new();
        let mut versions: HashMap<i64, i32> = HashMap::new();
        while !self.stop.load(Ordering::SeqCst) {
            if !self.pause.is_zero() {
                std::thread::sleep(self.pause);
            }
            let mut pending: Vec<(i64, Op)> = Vec::new();
            let mut tx = match client.transaction() {
                Ok(t) => t,
                Err(e) => {
                    log.errors
                        .push(format!("client {}: begin: {e}", self.index));
                    break;
                }
            };
            let result = self.work(&mut tx, &mut next, &live, &versions, &mut pending);
            if let Err(e) = result {
                drop(tx);
                log.errors.push(format!("client {}: {e}", self.index));
                if client.is_closed() {
                    break;
                }
                continue;
            }
            if self.rng.below(20) == 0 {
                let _ = tx.rollback();
                log.rollbacks += 1;
                continue;
            }
            match tx.commit() {
                Ok(()) => {
                    let seq = self.seq.fetch_add(1, Ordering::SeqCst);
                    for (id, op) in pending {
                        log.events.push(Event { seq, id, op });
                        match op {
                            Op::Insert => {
                                live.push(id);
                                versions.insert(id, 0);
                            }
                            Op::Update(v) => {
                                versions.insert(id, v);
                            }
                            Op::Delete => {
                                live.retain(|&x| x != id);
                                versions.remove(&id);
                            }
                        }
                    }
                }
                Err(e) => {
                    // The outcome is unknown: the server may have committed before the connection
                    // broke. Never touch these rows again.
                    for (id, _) in pending {
                        log.uncertain.push(id);
                        live.retain(|&x| x != id);
                    }
                    log.errors
                        .push(format!("client {}: commit: {e}", self.index));
                    if client.is_closed() {
                        break;
                    }
                }
            }
        }
        log.max_id = self.max_id;
        log
    }

    fn work(
        &mut self,
        tx: &mut Transaction<'_>,
        next: &mut i64,
        live: &[i64],
        versions: &HashMap<i64, i32>,
        pending: &mut Vec<(i64, Op)>,
    ) -> Result<(), postgres::Error> {
        let insert = format!(
            "INSERT INTO {} (id, client, val) VALUES ($1, $2, $3)",
            self.table
        );
        for _ in 0..1 + self.rng.below(3) {
            let id = self.id_base + 1 + *next * self.clients + self.index;
            *next += 1;
            self.max_id = self.max_id.max(id);
            let val = self.rng.text(self.max_len);
            tx.execute(&insert, &[&id, &(self.index as i32), &val])?;
            pending.push((id, Op::Insert));
        }
        let mut updated = None;
        if !live.is_empty() && self.rng.below(10) < 3 {
            let id = live[self.rng.below(live.len() as u64) as usize];
            let v = versions.get(&id).copied().unwrap_or(0) + 1;
            let val = self.rng.text(self.max_len);
            let sql = format!(
                "UPDATE {} SET version = $2, val = $3 WHERE id = $1",
                self.table
            );
            let n = tx.execute(&sql, &[&id, &v, &val])?;
            assert_eq!(n, 1, "load client {}: row {id} vanished", self.index);
            pending.push((id, Op::Update(v)));
            updated = Some(id);
        }
        if live.len() > 3 && self.rng.below(100) < 15 {
            let id = live[self.rng.below(live.len() as u64) as usize];
            if Some(id) != updated {
                let n = tx.execute(&format!("DELETE FROM {} WHERE id = $1", self.table), &[&id])?;
                assert_eq!(n, 1, "load client {}: row {id} vanished", self.index);
                pending.push((id, Op::Delete));
            }
        }
        Ok(())
    }
}

/// xorshift64*: plenty for picking rows and making text.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn text(&mut self, max_len: usize) -> String {
        let len = 1 + self.below(max_len as u64) as usize;
        (0..len)
            .map(|_| (b'a' + self.below(26) as u8) as char)
            .collect()
    }
}
