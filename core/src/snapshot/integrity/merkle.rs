//! `msb-merkle-sha256-v1`, the default integrity algorithm: a binary SHA-256
//! Merkle tree over 64 KiB leaves whose all-zero subtrees are constants, so
//! holes and all-zero blocks cost nothing and give the same result, and data
//! leaves hash in parallel on all cores. The normative definition and golden
//! vectors are in `docs/integrity.md`; this file must match it bit for bit.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::control::ProgressTracker;
use crate::sparse::data_extents;
use crate::sparse::is_all_zero;

/// Bytes per leaf, fixed by the algorithm name.
pub(crate) const LEAF_SIZE: u64 = 64 * 1024;

/// Domain-separation prefix of the final digest.
const DOMAIN: &[u8] = b"msb-merkle-sha256-v1\0";

const LEAF_TAG: u8 = 0x00;
const NODE_TAG: u8 = 0x01;

/// Leaves read per task: 1 MiB reads keep syscalls few and tasks balanced.
const LEAVES_PER_BATCH: u64 = 16;

type Hash = [u8; 32];

/// The raw 32-byte digest of `file`, whose apparent length is `len`.
pub(crate) fn digest(file: &File, len: u64, progress: &ProgressTracker<'_>) -> io::Result<Hash> {
    let leaf_count = len.div_ceil(LEAF_SIZE).max(1);
    let height = tree_height(leaf_count);
    let zero_roots = zero_subtree_hashes(height);
    let batches = leaf_batches(&data_extents(file, len)?, len);

    let per_batch: Vec<Vec<(u64, Hash)>> = batches
        .par_iter()
        .map_init(
            || vec![0u8; (LEAVES_PER_BATCH * LEAF_SIZE) as usize],
            |buf, &(first_leaf, leaves)| {
                let hashes = hash_batch(file, len, first_leaf, leaves, buf)?;
                progress.advance(leaves * LEAF_SIZE)?;
                Ok(hashes)
            },
        )
        .collect::<io::Result<_>>()?;

    // Batches are disjoint and sorted, so concatenating keeps leaf order.
    let nonzero_leaves: Vec<(u64, Hash)> = per_batch.into_iter().flatten().collect();
    let root = fold_sparse_tree(nonzero_leaves, &zero_roots);
    Ok(finish(len, &root))
}

/// Copy `len` bytes of `src` (read at `src_base + offset`), of which only
/// `extents` (`[start, end)`) may hold data, into the same offsets of the
/// new sparse file `dst` (all-zero pages stay holes), and return the digest
/// of the content, in one pass over the data on every core.
pub(crate) fn copy_and_digest(
    src: &File,
    src_base: u64,
    extents: &[(u64, u64)],
    len: u64,
    dst: &File,
) -> io::Result<Hash> {
    let leaf_count = len.div_ceil(LEAF_SIZE).max(1);
    let height = tree_height(leaf_count);
    let zero_roots = zero_subtree_hashes(height);
    let batches = leaf_batches(extents, len);
    let per_batch: Vec<Vec<(u64, Hash)>> = batches
        .par_iter()
        .map_init(
            || vec![0u8; (LEAVES_PER_BATCH * LEAF_SIZE) as usize],
            |buf, &(first_leaf, leaves)| {
                let start = first_leaf * LEAF_SIZE;
                let span = (leaves * LEAF_SIZE) as usize;
                let readable = (len.saturating_sub(start) as usize).min(span);
                src.read_exact_at(&mut buf[..readable], src_base + start)?;
                crate::sparse::write_nonzero_runs(dst, start, &buf[..readable])?;
                buf[readable..span].fill(0);
                Ok(buf[..span]
                    .chunks_exact(LEAF_SIZE as usize)
                    .enumerate()
                    .filter(|(_, leaf)| !is_all_zero(leaf))
                    .map(|(i, leaf)| (first_leaf + i as u64, leaf_hash(leaf)))
                    .collect())
            },
        )
        .collect::<io::Result<_>>()?;
    let nonzero_leaves: Vec<(u64, Hash)> = per_batch.into_iter().flatten().collect();
    Ok(finish(len, &fold_sparse_tree(nonzero_leaves, &zero_roots)))
}

/// The digest of a fully in-memory byte string; the reference the file path
/// is tested against and the definition in its simplest form.
#[cfg(test)]
pub(crate) fn digest_bytes(data: &[u8]) -> Hash {
    let len = data.len() as u64;
    let leaf_count = len.div_ceil(LEAF_SIZE).max(1);
    let height = tree_height(leaf_count);
    let zero_roots = zero_subtree_hashes(height);
    let mut leaf = vec![0u8; LEAF_SIZE as usize];
    let mut leaves = Vec::new();
    for (i, chunk) in data.chunks(LEAF_SIZE as usize).enumerate() {
        leaf.fill(0);
        leaf[..chunk.len()].copy_from_slice(chunk);
        leaves.push((i as u64, leaf_hash(&leaf)));
    }
    let leaves = leaves
        .into_iter()
        .filter(|(_, h)| *h != zero_roots[0])
        .collect();
    finish(len, &fold_sparse_tree(leaves, &zero_roots))
}

/// Smallest `h` with `2^h >= leaf_count`.
fn tree_height(leaf_count: u64) -> u32 {
    leaf_count.next_power_of_two().trailing_zeros()
}

/// `zero[k]` is the root of a subtree of height `k` whose leaves are all zero.
fn zero_subtree_hashes(height: u32) -> Vec<Hash> {
    let mut zero = vec![leaf_hash(&vec![0u8; LEAF_SIZE as usize])];
    for k in 0..height as usize {
        let below = zero[k];
        zero.push(node_hash(&below, &below));
    }
    zero
}

fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF_TAG]);
    h.update(leaf);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE_TAG]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

fn finish(len: u64, root: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(len.to_le_bytes());
    h.update(root);
    h.finalize().into()
}

/// Runs of at most [`LEAVES_PER_BATCH`] leaves, `(first_leaf, count)`, that
/// cover every leaf touching a data extent, sorted and disjoint.
fn leaf_batches(extents: &[(u64, u64)], len: u64) -> Vec<(u64, u64)> {
    let mut batches: Vec<(u64, u64)> = Vec::new();
    for &(start, end) in extents {
        let end = end.min(len);
        if end <= start {
            continue;
        }
        let mut leaf = start / LEAF_SIZE;
        let last = (end - 1) / LEAF_SIZE;
        if let Some((first, count)) = batches.last_mut() {
            let next = *first + *count;
            leaf = leaf.max(next); // leaves before `next` are already covered
            if leaf == next && leaf <= last && *count < LEAVES_PER_BATCH {
                let take = (LEAVES_PER_BATCH - *count).min(last + 1 - leaf);
                *count += take;
                leaf += take;
            }
        }
        while leaf <= last {
            let count = (last + 1 - leaf).min(LEAVES_PER_BATCH);
            batches.push((leaf, count));
            leaf += count;
        }
    }
    batches
}

/// Hashes of the non-zero leaves among `leaves` leaves from `first_leaf`.
fn hash_batch(
    file: &File,
    len: u64,
    first_leaf: u64,
    leaves: u64,
    buf: &mut [u8],
) -> io::Result<Vec<(u64, Hash)>> {
    let start = first_leaf * LEAF_SIZE;
    let span = (leaves * LEAF_SIZE) as usize;
    let readable = (len.saturating_sub(start) as usize).min(span);
    file.read_exact_at(&mut buf[..readable], start)?;
    buf[readable..span].fill(0); // the last leaf is zero-padded
    let mut hashes = Vec::new();
    for (i, leaf) in buf[..span].chunks_exact(LEAF_SIZE as usize).enumerate() {
        if !is_all_zero(leaf) {
            hashes.push((first_leaf + i as u64, leaf_hash(leaf)));
        }
    }
    Ok(hashes)
}

/// The root of the tree whose only non-zero leaves are `level` (sorted by
/// index); every missing node is the zero subtree of its height. Work is
/// O(non-zero leaves × height).
fn fold_sparse_tree(mut level: Vec<(u64, Hash)>, zero_roots: &[Hash]) -> Hash {
    let height = zero_roots.len() - 1;
    for zero in &zero_roots[..height] {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        let mut i = 0;
        while i < level.len() {
            let (index, hash) = level[i];
            let (left, right) = if index % 2 == 1 {
                (*zero, hash)
            } else if level.get(i + 1).is_some_and(|(j, _)| *j == index + 1) {
                i += 1;
                (hash, level[i].1)
            } else {
                (hash, *zero)
            };
            next.push((index / 2, node_hash(&left, &right)));
            i += 1;
        }
        level = next;
    }
    level.first().map_or(zero_roots[height], |(_, root)| *root)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree computed the slow way: every node, no zero shortcut.
    fn dense_reference(data: &[u8]) -> Hash {
        let len = data.len() as u64;
        let width = len.div_ceil(LEAF_SIZE).max(1).next_power_of_two() as usize;
        let mut padded = data.to_vec();
        padded.resize(width * LEAF_SIZE as usize, 0);
        let mut level: Vec<Hash> = padded.chunks(LEAF_SIZE as usize).map(leaf_hash).collect();
        while level.len() > 1 {
            level = level.chunks(2).map(|p| node_hash(&p[0], &p[1])).collect();
        }
        finish(len, &level[0])
    }

    #[test]
    fn sparse_fold_matches_the_dense_tree() {
        let leaf = LEAF_SIZE as usize;
        let mut cases: Vec<Vec<u8>> = vec![vec![], vec![7], vec![0; 3 * leaf + 5]];
        let mut data = vec![0u8; 5 * leaf + 123];
        data[leaf + 9] = 1;
        data[5 * leaf + 100] = 2;
        cases.push(data);
        let mut dense = vec![0u8; 4 * leaf];
        for (i, b) in dense.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        cases.push(dense);
        for data in cases {
            assert_eq!(
                digest_bytes(&data),
                dense_reference(&data),
                "len {}",
                data.len()
            );
        }
    }

    #[test]
    fn batches_cover_each_touched_leaf_once() {
        let l = LEAF_SIZE;
        let extents = [
            (0, 10),
            (5, 2 * l),
            (2 * l, 2 * l + 1),
            (40 * l, 41 * l + 1),
        ];
        let batches = leaf_batches(&extents, 100 * l);
        let mut leaves: Vec<u64> = batches.iter().flat_map(|&(f, c)| f..f + c).collect();
        let before = leaves.len();
        leaves.dedup();
        assert_eq!(before, leaves.len());
        assert_eq!(leaves, vec![0, 1, 2, 40, 41]);
        assert!(batches.iter().all(|&(_, c)| c <= LEAVES_PER_BATCH));
    }
}
