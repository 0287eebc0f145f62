//! Frugal's distribution layer: the processes of one job and what they exchange.
//!
//! A job is one process (the default) or the ranks of an MPI launch (`mpirun -np N frugal …`,
//! cargo feature `mpi`). The library code that distributes work asks [`world`] for the
//! communicator and is written so that **the result does not depend on the number of ranks**:
//!
//! - sums over items (calibration chunks) go through [`tree_sum`], a pairwise tree over the
//!   item indices whose shape depends only on the number of items; ranks compute whole subtrees
//!   and every rank combines the same subtree sums in the same order, so one process and N
//!   ranks add the same numbers in the same order, bit for bit;
//! - per-item results are gathered in item order ([`gather_items`]), so concatenations and
//!   sums over them are the single process's;
//! - independent jobs (tensors to round) are assigned by cost ([`assign_by_cost`]) and their
//!   results gathered; each result is computed by exactly one rank, the same way as alone.
//!
//! Failures: a rank that hits an error calls [`fail`], which prints the rank and the cause and
//! aborts the whole job (`MPI_Abort`), so no rank waits forever in a collective. Files are
//! written by rank 0 only ([`is_root`]), after the last collective that could fail.

use std::ops::Range;
use std::sync::OnceLock;

#[cfg(feature = "mpi")]
mod mpi_comm;

/// What can go wrong exchanging data between ranks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("distributed run: {0}")]
    Protocol(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// The processes of one job. Every method but [`Comm::rank`] and [`Comm::size`] is a
/// collective: every rank calls it, in the same order.
pub trait Comm: Send + Sync {
    /// This process's index, `0..size`.
    fn rank(&self) -> usize;
    /// Number of processes.
    fn size(&self) -> usize;
    /// Every rank's `mine`, in rank order, on every rank.
    fn allgather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>>;
    /// Every rank's `mine`, in rank order, on rank 0 (`None` elsewhere).
    fn gather(&self, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>>;
    /// Sends `mine` to `partner` and returns what `partner` sent (both call it with each
    /// other's rank).
    fn exchange(&self, partner: usize, mine: &[u8]) -> Result<Vec<u8>>;
    /// Waits until every rank has called it.
    fn barrier(&self);
    /// Ends every rank of the job with `code`.
    fn abort(&self, code: i32) -> !;
}

/// The one-process job.
pub struct Single;

impl Comm for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn allgather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        Ok(vec![mine.to_vec()])
    }
    fn gather(&self, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        Ok(Some(vec![mine.to_vec()]))
    }
    fn exchange(&self, partner: usize, mine: &[u8]) -> Result<Vec<u8>> {
        if partner == 0 {
            Ok(mine.to_vec())
        } else {
            Err(Error::Protocol(format!(
                "no rank {partner} in a one-process job"
            )))
        }
    }
    fn barrier(&self) {}
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

static WORLD: OnceLock<Box<dyn Comm>> = OnceLock::new();

/// Keeps MPI initialised while it lives (finalised on drop). Hold it for the whole program.
pub struct Guard {
    #[cfg(feature = "mpi")]
    _universe: Option<mpi::environment::Universe>,
}

/// Whether this process was started by an MPI launcher (Open MPI, MPICH/Hydra, Slurm's PMI).
pub fn launched_by_mpi() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// Sets up [`world`]: the MPI world when this binary has the `mpi` feature and was started by
/// an MPI launcher, one process otherwise. Call once, first thing in `main`. Errors when an MPI
/// launch meets a binary built without the feature and more than one rank (each rank would
/// silently redo the whole job alone).
pub fn init() -> Result<Guard> {
    #[cfg(feature = "mpi")]
    if launched_by_mpi() {
        let (universe, comm) = mpi_comm::init()?;
        let several = comm.size() > 1;
        set_world(Box::new(comm));
        if several {
            // A panic on one rank must end the job too (unwinding would leave the others
            // waiting in a collective): report it with the rank, then abort every rank.
            let default = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                default(info);
                let w = world();
                say(&format!(
                    "frugal: rank {} of {} panicked; aborting the job",
                    w.rank(),
                    w.size()
                ));
                w.abort(101);
            }));
        }
        return Ok(Guard {
            _universe: Some(universe),
        });
    }
    #[cfg(not(feature = "mpi"))]
    if let Some(n) = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&n| n > 1)
    {
        return Err(Error::Protocol(format!(
            "started as one of {n} MPI ranks, but this frugal was built without the `mpi` \
             feature (cargo build --release -p frugal-cli --features mpi)"
        )));
    }
    set_world(Box::new(Single));
    Ok(Guard {
        #[cfg(feature = "mpi")]
        _universe: None,
    })
}

fn set_world(c: Box<dyn Comm>) {
    let _ = WORLD.set(c);
}

/// The job's communicator ([`Single`] unless [`init`] set up MPI).
pub fn world() -> &'static dyn Comm {
    WORLD.get_or_init(|| Box::new(Single)).as_ref()
}

/// Whether this process writes the job's files and prints its results (rank 0).
pub fn is_root() -> bool {
    world().rank() == 0
}

/// Reports a rank's failure and ends the whole job: with more than one rank, prints
/// `frugal: rank R of N failed: CAUSE` and aborts every rank (so none waits in a collective);
/// alone, returns and lets the caller report the error as usual.
pub fn fail(cause: &dyn std::fmt::Display, code: i32) {
    let w = world();
    if w.size() > 1 {
        say(&format!(
            "frugal: rank {} of {} failed: {cause}",
            w.rank(),
            w.size()
        ));
        w.abort(code);
    }
}

/// Writes one line to standard error in a single write. `eprintln!` writes each formatted piece
/// on its own (standard error is unbuffered), and the MPI launcher forwards each piece as it
/// comes, so its own abort message could land in the middle of the rank's line.
fn say(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
}

/// Fault injection for the tests of failure handling: with `FRUGAL_FAULT_INJECT=RANK:POINT:KIND`
/// in the environment, rank RANK at the named point returns an error (`error`), panics
/// (`panic`) or is killed by SIGKILL (`kill`), as a crashed node would be. Does nothing
/// otherwise.
pub fn fault_point(point: &str) -> Result<()> {
    let Ok(spec) = std::env::var("FRUGAL_FAULT_INJECT") else {
        return Ok(());
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let [rank, at, kind] = parts[..] else {
        return Ok(());
    };
    if at != point || rank.parse::<usize>().ok() != Some(world().rank()) {
        return Ok(());
    }
    if kind == "panic" {
        panic!("fault injected at {point}");
    }
    if kind == "kill" {
        let pid = std::process::id().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status();
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
    Err(Error::Protocol(format!("fault injected at {point}")))
}

/// The items `0..n` of `rank` among `size`: contiguous ranges, sizes differing by at most one.
pub fn shard(n: usize, rank: usize, size: usize) -> Range<usize> {
    let size = size.max(1);
    (n * rank / size)..(n * (rank + 1) / size)
}

/// Assigns jobs of the given costs to `size` ranks, largest first to the least loaded rank
/// (ties to the lower rank): every rank computes the same assignment.
pub fn assign_by_cost(costs: &[f64], size: usize) -> Vec<usize> {
    let size = size.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by(|&a, &b| costs[b].total_cmp(&costs[a]).then(a.cmp(&b)));
    let mut load = vec![0f64; size];
    let mut owner = vec![0usize; costs.len()];
    for j in order {
        let r = (0..size)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        load[r] += costs[j].max(0.0);
        owner[j] = r;
    }
    owner
}

/// The canonical tree over `lo..hi`: a leaf for one item, else the halves `lo..mid`, `mid..hi`
/// with `mid = lo + (hi − lo)/2`.
fn split(r: &Range<usize>) -> (Range<usize>, Range<usize>) {
    let mid = r.start + (r.end - r.start) / 2;
    (r.start..mid, mid..r.end)
}

/// The nodes of the canonical tree over `0..n` cut at `depth` (fewer where leaves come first),
/// left to right.
fn cut(r: Range<usize>, depth: u32, out: &mut Vec<Range<usize>>) {
    if depth == 0 || r.end - r.start <= 1 {
        out.push(r);
    } else {
        let (a, b) = split(&r);
        cut(a, depth - 1, out);
        cut(b, depth - 1, out);
    }
}

fn add_into(acc: &mut [f64], v: &[f64]) {
    acc.iter_mut().zip(v).for_each(|(a, b)| *a += b);
}

/// Sum of the subtree over `r`, items produced by `f` in index order.
fn subtree<B: std::ops::DerefMut<Target = [f64]>, E>(
    r: Range<usize>,
    f: &mut dyn FnMut(usize) -> std::result::Result<B, E>,
) -> std::result::Result<B, E> {
    if r.end - r.start == 1 {
        return f(r.start);
    }
    let (a, b) = split(&r);
    let mut left = subtree(a, f)?;
    let right = subtree(b, f)?;
    add_into(&mut left, &right);
    Ok(left)
}

/// Combines the sums of the nodes of `cut` (in order) up the tree over `r`.
fn combine(
    r: Range<usize>,
    nodes: &mut std::iter::Peekable<std::vec::IntoIter<(Range<usize>, Vec<f64>)>>,
) -> Vec<f64> {
    if nodes.peek().is_some_and(|(n, _)| *n == r) {
        return nodes.next().expect("peeked").1;
    }
    let (a, b) = split(&r);
    let mut left = combine(a, nodes);
    let right = combine(b, nodes);
    add_into(&mut left, &right);
    left
}

/// The subtrees of the canonical tree over `0..n` that [`tree_sum`] distributes, with their
/// owners; one node owned by rank 0 for one rank.
fn tree_cut(n: usize, size: usize) -> (Vec<Range<usize>>, Vec<usize>) {
    if size <= 1 || n == 0 {
        return (std::iter::once(0..n).collect(), vec![0]);
    }
    let depth = (2 * size).next_power_of_two().trailing_zeros();
    let mut nodes = Vec::new();
    cut(0..n, depth, &mut nodes);
    let k = nodes.len();
    let owners = (0..k).map(|j| j * size / k).collect();
    (nodes, owners)
}

/// The items of `0..n` for which [`tree_sum`] calls `f` on this rank: a contiguous range
/// (subtrees are assigned in order), empty when the rank has none.
pub fn tree_items(comm: &dyn Comm, n: usize) -> Range<usize> {
    let (nodes, owners) = tree_cut(n, comm.size());
    let mine: Vec<&Range<usize>> = nodes
        .iter()
        .zip(&owners)
        .filter(|(_, &o)| o == comm.rank())
        .map(|(r, _)| r)
        .collect();
    match (mine.first(), mine.last()) {
        (Some(a), Some(b)) => a.start..b.end,
        _ => 0..0,
    }
}

/// Σ `f(i)` over `i` in `0..n` (vectors of length `len`), added in the canonical pairwise tree
/// over the indices, whatever the number of ranks: the tree is cut into subtrees (about
/// twice as many as ranks, a power of two), each rank computes its contiguous share of them
/// (calling `f` only for its items, in order), every rank receives every subtree sum and
/// combines them identically. One process computes the same tree uncut. `n = 0` gives zeros.
///
/// The sums are held in `f`'s own buffers (`B`: a `Vec`, or a buffer in a mapped file), one
/// per level of the tree at most; what other ranks send arrives in memory and is converted.
pub fn tree_sum<B, E>(
    comm: &dyn Comm,
    n: usize,
    len: usize,
    f: &mut dyn FnMut(usize) -> std::result::Result<B, E>,
) -> std::result::Result<B, E>
where
    B: std::ops::DerefMut<Target = [f64]> + From<Vec<f64>>,
    E: From<Error>,
{
    let check = |v: B, what: &str| -> std::result::Result<B, E> {
        if v.len() == len {
            Ok(v)
        } else {
            Err(Error::Protocol(format!("{what} has {} values, expected {len}", v.len())).into())
        }
    };
    let mut f = |i: usize| f(i).and_then(|v| check(v, "a partial sum"));
    if n == 0 {
        return Ok(B::from(vec![0.0; len]));
    }
    let size = comm.size();
    if size == 1 {
        return subtree(0..n, &mut f);
    }
    let (nodes, owners) = tree_cut(n, size);
    if size.is_power_of_two() && nodes.len() == 2 * size {
        // Every rank owns the two halves of one node at depth log₂N: recursive doubling up
        // the same tree, log₂N exchanges of one sum instead of every sum to every rank; at
        // each level the lower ranks' sum is the left operand, as in the tree.
        let r = comm.rank();
        let mut mine = subtree(nodes[2 * r].clone(), &mut f)?;
        add_into(&mut mine, &subtree(nodes[2 * r + 1].clone(), &mut f)?);
        let mut bit = 1;
        while bit < size {
            let partner = r ^ bit;
            let bytes: Vec<u8> = mine.iter().flat_map(|x| x.to_le_bytes()).collect();
            let theirs = comm.exchange(partner, &bytes)?;
            if theirs.len() != len * 8 {
                return Err(Error::Protocol(format!(
                    "rank {partner} sent {} bytes of a partial sum, expected {}",
                    theirs.len(),
                    len * 8
                ))
                .into());
            }
            let mut theirs: Vec<f64> = theirs
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect();
            if r & bit == 0 {
                add_into(&mut mine, &theirs);
            } else {
                add_into(&mut theirs, &mine);
                mine.copy_from_slice(&theirs);
            }
            bit <<= 1;
        }
        return Ok(mine);
    }
    let k = nodes.len();
    let owner = |j: usize| owners[j];
    let mut mine = Vec::with_capacity(8 * len * k.div_ceil(size));
    for (j, r) in nodes.iter().enumerate() {
        if owner(j) == comm.rank() {
            for x in subtree(r.clone(), &mut f)?.iter() {
                mine.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    let all = comm.allgather(&mine)?;
    let mut sums = Vec::with_capacity(k);
    for (rank, bytes) in all.iter().enumerate() {
        let count = (0..k).filter(|&j| owner(j) == rank).count();
        if bytes.len() != count * len * 8 {
            return Err(Error::Protocol(format!(
                "rank {rank} sent {} bytes of partial sums, expected {}",
                bytes.len(),
                count * len * 8
            ))
            .into());
        }
        let mut vals = bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")));
        // The length was checked above: every sum has its `len` values.
        for _ in 0..count {
            sums.push(vals.by_ref().take(len).collect::<Vec<f64>>());
        }
    }
    let mut it = nodes
        .into_iter()
        .zip(sums)
        .collect::<Vec<_>>()
        .into_iter()
        .peekable();
    Ok(B::from(combine(0..n, &mut it)))
}

/// Runs `f` for this rank's items of `0..n` ([`shard`]) and returns every item's bytes, in item
/// order, on every rank.
pub fn gather_items<E: From<Error>>(
    comm: &dyn Comm,
    n: usize,
    f: &mut dyn FnMut(Range<usize>) -> std::result::Result<Vec<Vec<u8>>, E>,
) -> std::result::Result<Vec<Vec<u8>>, E> {
    let mine = shard(n, comm.rank(), comm.size());
    let items = f(mine.clone())?;
    if items.len() != mine.len() {
        return Err(
            Error::Protocol(format!("{} results for {} items", items.len(), mine.len())).into(),
        );
    }
    if comm.size() == 1 {
        return Ok(items);
    }
    let all = comm.allgather(&frame(&items))?;
    let mut out = Vec::with_capacity(n);
    for (rank, bytes) in all.iter().enumerate() {
        let got = unframe(bytes)?;
        let want = shard(n, rank, comm.size()).len();
        if got.len() != want {
            return Err(Error::Protocol(format!(
                "rank {rank} sent {} results, expected {want}",
                got.len()
            ))
            .into());
        }
        out.extend(got);
    }
    Ok(out)
}

/// Items `0..n`, each computed by exactly one rank: `mine` holds this rank's `(index, bytes)`.
/// Returns every item in index order, on every rank (`to_root`: on rank 0 only, `None`
/// elsewhere). An index out of range, sent twice or by no rank is an error.
pub fn exchange_owned(
    comm: &dyn Comm,
    n: usize,
    mine: Vec<(usize, Vec<u8>)>,
    to_root: bool,
) -> Result<Option<Vec<Vec<u8>>>> {
    let mut out: Vec<Option<Vec<u8>>> = (0..n).map(|_| None).collect();
    let mut place = |k: usize, b: Vec<u8>| -> Result<()> {
        match out.get_mut(k) {
            Some(slot @ None) => {
                *slot = Some(b);
                Ok(())
            }
            Some(Some(_)) => Err(Error::Protocol(format!("item {k} of {n} sent twice"))),
            None => Err(Error::Protocol(format!("item {k} of {n} out of range"))),
        }
    };
    if comm.size() == 1 {
        for (k, b) in mine {
            place(k, b)?;
        }
    } else {
        let sent: Vec<Vec<u8>> = mine
            .into_iter()
            .map(|(k, b)| [&(k as u64).to_le_bytes()[..], &b].concat())
            .collect();
        let all = if to_root {
            match comm.gather(&frame(&sent))? {
                Some(all) => all,
                None => return Ok(None),
            }
        } else {
            comm.allgather(&frame(&sent))?
        };
        for rank_bytes in all {
            for item in unframe(&rank_bytes)? {
                let k = item
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                    .and_then(|k| usize::try_from(k).ok())
                    .ok_or_else(|| Error::Protocol("item without its index".into()))?;
                place(k, item[8..].to_vec())?;
            }
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(k, b)| b.ok_or_else(|| Error::Protocol(format!("no rank returned item {k} of {n}"))))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// Length-prefixed concatenation of byte strings.
pub fn frame(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(items.iter().map(|i| i.len() + 8).sum::<usize>() + 8);
    out.extend_from_slice(&(items.len() as u64).to_le_bytes());
    for i in items {
        out.extend_from_slice(&(i.len() as u64).to_le_bytes());
        out.extend_from_slice(i);
    }
    out
}

/// The inverse of [`frame`], every length checked against the bytes left.
pub fn unframe(bytes: &[u8]) -> Result<Vec<Vec<u8>>> {
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let end = pos
            .checked_add(n)
            .filter(|&e| e <= bytes.len())
            .ok_or_else(|| Error::Protocol(format!("framed message cut short at byte {pos}")))?;
        let s = &bytes[pos..end];
        pos = end;
        Ok(s)
    };
    let u64_at = |s: &[u8]| u64::from_le_bytes(s.try_into().expect("8 bytes"));
    let count = u64_at(take(8)?);
    // Each item needs at least its 8-byte length: a count beyond that is corrupt.
    if count > (bytes.len() / 8) as u64 {
        return Err(Error::Protocol(format!(
            "framed message claims {count} items"
        )));
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let len = usize::try_from(u64_at(take(8)?))
            .map_err(|_| Error::Protocol("framed item too long".into()))?;
        out.push(take(len)?.to_vec());
    }
    if pos != bytes.len() {
        return Err(Error::Protocol(format!(
            "{} bytes after the framed items",
            bytes.len() - pos
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier, Mutex};

    /// In-process ranks on threads, exchanging through shared slots: the collectives' contract
    /// without MPI.
    struct Threads {
        rank: usize,
        size: usize,
        slots: Arc<Mutex<Vec<Vec<u8>>>>,
        barrier: Arc<Barrier>,
    }

    impl Comm for Threads {
        fn rank(&self) -> usize {
            self.rank
        }
        fn size(&self) -> usize {
            self.size
        }
        fn allgather(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
            self.slots.lock().unwrap()[self.rank] = mine.to_vec();
            self.barrier.wait();
            let all = self.slots.lock().unwrap().clone();
            self.barrier.wait();
            Ok(all)
        }
        fn gather(&self, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
            let all = self.allgather(mine)?;
            Ok((self.rank == 0).then_some(all))
        }
        fn exchange(&self, partner: usize, mine: &[u8]) -> Result<Vec<u8>> {
            // Every rank exchanges in the same step (recursive doubling), so the slots serve.
            let all = self.allgather(mine)?;
            Ok(all[partner].clone())
        }
        fn barrier(&self) {
            self.barrier.wait();
        }
        fn abort(&self, _code: i32) -> ! {
            panic!("abort")
        }
    }

    fn on_ranks<T: Send + 'static>(
        size: usize,
        f: impl Fn(&dyn Comm) -> T + Send + Sync + 'static,
    ) -> Vec<T> {
        let slots = Arc::new(Mutex::new(vec![Vec::new(); size]));
        let barrier = Arc::new(Barrier::new(size));
        let f = Arc::new(f);
        let handles: Vec<_> = (0..size)
            .map(|rank| {
                let c = Threads {
                    rank,
                    size,
                    slots: slots.clone(),
                    barrier: barrier.clone(),
                };
                let f = f.clone();
                std::thread::spawn(move || f(&c))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    /// Values whose sum depends on the order of addition.
    fn item(i: usize) -> Vec<f64> {
        let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let x = ((h >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 2f64.powi((h % 41) as i32 - 20);
        vec![x, 1.0 / (i as f64 + 0.3), -x * 0.7 + 1e-3]
    }

    #[test]
    fn tree_sum_is_bit_identical_for_every_rank_count() {
        let mut order_matters = false;
        for n in [1usize, 2, 3, 5, 7, 16, 37, 100] {
            let alone = tree_sum::<Vec<f64>, Error>(&Single, n, 3, &mut |i| Ok(item(i))).unwrap();
            // The sequential sum differs for these values: the test can tell orders apart.
            let mut seq = vec![0.0; 3];
            (0..n).for_each(|i| add_into(&mut seq, &item(i)));
            order_matters |= seq != alone;
            for size in [2usize, 3, 4, 5, 8] {
                let calls = Arc::new(Mutex::new(Vec::new()));
                let c2 = calls.clone();
                let got = on_ranks(size, move |c| {
                    tree_sum::<Vec<f64>, Error>(c, n, 3, &mut |i| {
                        c2.lock().unwrap().push(i);
                        Ok(item(i))
                    })
                    .unwrap()
                });
                for (r, g) in got.iter().enumerate() {
                    let same = g
                        .iter()
                        .zip(&alone)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "n = {n}, {size} ranks, rank {r}: {g:?} vs {alone:?}");
                }
                let ranges = on_ranks(size, move |c| tree_items(c, n));
                let mut calls_by_range: Vec<usize> = ranges.into_iter().flatten().collect();
                let mut seen = calls.lock().unwrap().clone();
                calls_by_range.sort_unstable();
                seen.sort_unstable();
                assert_eq!(seen, (0..n).collect::<Vec<_>>(), "each item computed once");
                assert_eq!(calls_by_range, seen, "tree_items names the items computed");
            }
        }
        assert!(
            order_matters,
            "pick values whose sums depend on the order of addition"
        );
    }

    #[test]
    fn tree_sum_refuses_partials_of_the_wrong_length() {
        let e = tree_sum::<Vec<f64>, Error>(&Single, 3, 2, &mut |i| {
            Ok(vec![0.0; 2 + (i == 1) as usize])
        });
        assert!(e.unwrap_err().to_string().contains("3 values, expected 2"));
    }

    #[test]
    fn gather_items_returns_item_order_on_every_rank() {
        let got = on_ranks(3, |c| {
            gather_items::<Error>(c, 10, &mut |r| Ok(r.map(|i| vec![i as u8; i]).collect()))
                .unwrap()
        });
        let want: Vec<Vec<u8>> = (0..10).map(|i| vec![i as u8; i]).collect();
        for g in got {
            assert_eq!(g, want);
        }
    }

    #[test]
    fn owned_items_come_back_in_order_and_gaps_are_refused() {
        let got = on_ranks(3, |c| {
            let mine = (0..7)
                .filter(|k| k % 3 == c.rank())
                .map(|k| (k, vec![k as u8; k]))
                .collect();
            (exchange_owned(c, 7, mine, false).unwrap(), c.rank())
        });
        for (g, _) in &got {
            assert_eq!(
                g.as_ref().unwrap(),
                &(0..7).map(|k| vec![k as u8; k]).collect::<Vec<_>>()
            );
        }
        let to_root = on_ranks(2, |c| {
            exchange_owned(c, 2, vec![(c.rank(), vec![1])], true).unwrap()
        });
        assert!(to_root[0].is_some() && to_root[1].is_none());
        assert!(
            exchange_owned(&Single, 2, vec![(0, vec![])], false).is_err(),
            "item 1 missing"
        );
        assert!(exchange_owned(&Single, 1, vec![(0, vec![]), (0, vec![])], false).is_err());
        assert!(exchange_owned(&Single, 1, vec![(3, vec![])], false).is_err());
    }

    #[test]
    fn shards_cover_every_item_once_and_costs_balance() {
        for n in [0usize, 1, 5, 16, 17] {
            for size in 1..6 {
                let all: Vec<usize> = (0..size).flat_map(|r| shard(n, r, size)).collect();
                assert_eq!(all, (0..n).collect::<Vec<_>>());
            }
        }
        let owner = assign_by_cost(&[5.0, 4.0, 3.0, 3.0, 3.0], 2);
        let load = |r| {
            (0..5)
                .filter(|&j| owner[j] == r)
                .map(|j| [5.0, 4.0, 3.0, 3.0, 3.0][j])
                .sum::<f64>()
        };
        // Largest first to the least loaded: 5→0, 4→1, 3→1, 3→0, 3→1.
        assert_eq!((load(0), load(1)), (8.0, 10.0));
        assert_eq!(
            owner,
            assign_by_cost(&[5.0, 4.0, 3.0, 3.0, 3.0], 2),
            "deterministic"
        );
    }

    #[test]
    fn frames_round_trip_and_crafted_ones_are_refused() {
        let items = vec![vec![1u8, 2, 3], vec![], vec![9u8; 20]];
        assert_eq!(unframe(&frame(&items)).unwrap(), items);
        let f = frame(&items);
        assert!(unframe(&f[..f.len() - 1]).is_err());
        let mut huge = f.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(unframe(&huge).is_err());
        let mut long = f.clone();
        long[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(unframe(&long).is_err());
        assert!(unframe(&[]).is_err());
    }
}
