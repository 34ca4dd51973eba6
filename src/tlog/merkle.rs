//! RFC 6962 / RFC 9162 Merkle tree hashing: tree heads, a streaming accumulator,
//! and inclusion and consistency proofs.
//!
//! Leaves are hashed as `SHA-256(0x00 || data)`, interior nodes as
//! `SHA-256(0x01 || left || right)`, and the empty tree hashes to `SHA-256("")`.

use aws_lc_rs::digest::{self, SHA256};

/// A SHA-256 output: the type of every leaf hash, node hash and tree head.
pub type Hash = [u8; 32];

const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Why a Merkle proof could not be built or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The leaf index (or old tree size) does not fit inside the tree.
    #[error("leaf index {index} is out of range for tree size {size}")]
    IndexOutOfRange {
        /// The requested leaf index.
        index: u64,
        /// The tree size it was checked against.
        size: u64,
    },
    /// The proof holds more hashes than the tree shape allows.
    #[error("proof has more hashes than the tree shape allows")]
    PathTooLong,
    /// The proof holds fewer hashes than the tree shape requires.
    #[error("proof has fewer hashes than the tree shape requires")]
    PathTooShort,
    /// The proof is well-formed but leads to a different root hash.
    #[error("proof does not lead to the expected root hash")]
    RootMismatch,
    /// A consistency proof was asked for a tree that shrank.
    #[error("old tree size {old} is larger than new tree size {new}")]
    SizesOutOfOrder {
        /// The older (claimed smaller) tree size.
        old: u64,
        /// The newer (claimed larger) tree size.
        new: u64,
    },
}

fn sha256(data: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&SHA256, data).as_ref());
    out
}

/// Hashes one leaf's data into the tree (RFC 6962 §2.1, leaf prefix 0x00).
pub fn leaf_hash(data: &[u8]) -> Hash {
    const INLINE: usize = 128;
    if data.len() <= INLINE {
        // Small inputs (the usual 32-byte entry hashes) are hashed from the stack.
        let mut buf = [0u8; INLINE + 1];
        buf[0] = LEAF_PREFIX;
        buf[1..=data.len()].copy_from_slice(data);
        sha256(&buf[..=data.len()])
    } else {
        let mut ctx = digest::Context::new(&SHA256);
        ctx.update(&[LEAF_PREFIX]);
        ctx.update(data);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

/// Hashes two child hashes into their parent (RFC 6962 §2.1, node prefix 0x01).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    sha256(&buf)
}

/// Returns the root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// Largest power of two strictly smaller than `n`; `n` must be at least 2.
fn split_point(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Computes the Merkle tree head (MTH) of already-hashed leaves, by the RFC definition.
pub fn root(leaf_hashes: &[Hash]) -> Hash {
    match leaf_hashes {
        [] => empty_root(),
        [only] => *only,
        _ => {
            let (left, right) = leaf_hashes.split_at(split_point(leaf_hashes.len()));
            node_hash(&root(left), &root(right))
        }
    }
}

/// Streaming tree-head calculator: O(log n) memory, no allocation per leaf.
///
/// It keeps the roots of the perfect subtrees that make up the tree so far
/// (one per set bit of the size), so [`Accumulator::root`] is available at
/// every size and always equals [`root`] over the same leaves.
#[derive(Clone, Debug)]
pub struct Accumulator {
    size: u64,
    /// `peaks[level]` is the root of a perfect subtree of `2^level` leaves,
    /// valid only where bit `level` of `size` is set.
    peaks: [Hash; 64],
}

impl Default for Accumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl Accumulator {
    /// Starts an empty tree.
    pub const fn new() -> Self {
        Self {
            size: 0,
            peaks: [[0; 32]; 64],
        }
    }

    /// Appends one leaf hash (as returned by [`leaf_hash`]).
    ///
    /// # Panics
    /// If the tree already holds `u64::MAX` leaves, which no real log reaches.
    pub fn push(&mut self, leaf_hash: Hash) {
        let new_size = self
            .size
            .checked_add(1)
            .expect("a Merkle tree holds at most u64::MAX leaves");
        // Each trailing one bit of the old size is a peak that the new leaf completes.
        let merges = self.size.trailing_ones() as usize;
        let mut carry = leaf_hash;
        for peak in &self.peaks[..merges] {
            carry = node_hash(peak, &carry);
        }
        self.peaks[merges] = carry;
        self.size = new_size;
    }

    /// Returns the number of leaves pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Returns the tree head at the current size, in O(log n) hashes.
    pub fn root(&self) -> Hash {
        let mut acc: Option<Hash> = None;
        for (level, peak) in self.peaks.iter().enumerate() {
            if self.size >> level & 1 == 1 {
                // Smaller (right-hand) subtrees are folded in first.
                acc = Some(match acc {
                    None => *peak,
                    Some(right) => node_hash(peak, &right),
                });
            }
        }
        acc.unwrap_or_else(empty_root)
    }
}

fn to_usize(value: u64, size: usize) -> Result<usize, ProofError> {
    usize::try_from(value).map_err(|_| ProofError::IndexOutOfRange {
        index: value,
        size: size as u64,
    })
}

/// Builds the audit path for leaf `index` (RFC 6962 §2.1.1, `PATH(m, D[n])`).
pub fn inclusion_proof(leaf_hashes: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let i = to_usize(index, leaf_hashes.len())?;
    if i >= leaf_hashes.len() {
        return Err(ProofError::IndexOutOfRange {
            index,
            size: leaf_hashes.len() as u64,
        });
    }
    let mut proof = Vec::new();
    path(i, leaf_hashes, &mut proof);
    Ok(proof)
}

fn path(index: usize, leaves: &[Hash], out: &mut Vec<Hash>) {
    if leaves.len() <= 1 {
        return;
    }
    let (left, right) = leaves.split_at(split_point(leaves.len()));
    if index < left.len() {
        path(index, left, out);
        out.push(root(right));
    } else {
        path(index - left.len(), right, out);
        out.push(root(left));
    }
}

/// Recomputes the root from an inclusion proof (RFC 9162 §2.1.3.2, steps 1-5).
pub fn root_from_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
) -> Result<Hash, ProofError> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange {
            index,
            size: tree_size,
        });
    }
    let (mut fn_, mut sn) = (index, tree_size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::PathTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::PathTooShort);
    }
    Ok(r)
}

/// Checks that `leaf_hash` sits at `index` in the tree of `tree_size` with root `expected_root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    expected_root: &Hash,
) -> Result<(), ProofError> {
    let r = root_from_inclusion_proof(leaf_hash, index, tree_size, proof)?;
    if r == *expected_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Builds the proof that the first `old_size` leaves are a prefix of the tree
/// (RFC 6962 §2.1.2, `PROOF(m, D[n])`); empty when `old_size` is 0 or the full size.
pub fn consistency_proof(leaf_hashes: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let n = leaf_hashes.len();
    let m = to_usize(old_size, n)?;
    if m > n {
        return Err(ProofError::SizesOutOfOrder {
            old: old_size,
            new: n as u64,
        });
    }
    let mut proof = Vec::new();
    if m > 0 {
        subproof(m, leaf_hashes, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, leaves: &[Hash], whole_old_tree: bool, out: &mut Vec<Hash>) {
    if m == leaves.len() {
        if !whole_old_tree {
            out.push(root(leaves));
        }
        return;
    }
    let (left, right) = leaves.split_at(split_point(leaves.len()));
    if m <= left.len() {
        subproof(m, left, whole_old_tree, out);
        out.push(root(right));
    } else {
        subproof(m - left.len(), right, false, out);
        out.push(root(left));
    }
}

/// Checks that the tree `new_root` of `new_size` extends the tree `old_root` of
/// `old_size` (RFC 9162 §2.1.4.2). Equal sizes need equal roots and an empty
/// proof; size 0 needs the empty-tree root and an empty proof.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == 0 || old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::PathTooLong);
        }
        let roots_ok = if old_size == 0 {
            *old_root == empty_root() && (new_size > 0 || new_root == old_root)
        } else {
            old_root == new_root
        };
        return if roots_ok {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    // From here on 0 < old_size < new_size, and the proof cannot be empty.
    if proof.is_empty() {
        return Err(ProofError::PathTooShort);
    }
    let (first, rest) = if old_size.is_power_of_two() {
        (old_root, proof)
    } else {
        proof.split_first().ok_or(ProofError::PathTooShort)?
    };
    let (mut fn_, mut sn) = (old_size - 1, new_size - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return Err(ProofError::PathTooLong);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::PathTooShort);
    }
    if fr == *old_root && sr == *new_root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Hash {
        assert_eq!(s.len(), 64, "test hash must be 64 hex digits");
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex digit");
        }
        out
    }

    fn hexes(list: &[&str]) -> Vec<Hash> {
        list.iter().map(|s| hex(s)).collect()
    }

    /// Leaf inputs of the RFC 6962 reference vectors (transparency-dev/merkle testonly).
    const RFC_LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    /// Expected roots for sizes 1..=8.
    const RFC_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn rfc_leaf_hashes() -> Vec<Hash> {
        RFC_LEAVES.iter().map(|d| leaf_hash(d)).collect()
    }

    fn rfc_root(size: usize) -> Hash {
        hex(RFC_ROOTS[size - 1])
    }

    fn test_leaves(n: usize) -> Vec<Hash> {
        (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn rfc6962_leaf_and_empty_hashes() {
        assert_eq!(
            empty_root(),
            hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        );
        let leaves = rfc_leaf_hashes();
        assert_eq!(
            leaves[1],
            hex("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7")
        );
        assert_eq!(
            leaves[7],
            hex("46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1")
        );
        // A large leaf takes the streaming path and must agree with a plain hash.
        let big = vec![7u8; 1000];
        let mut prefixed = vec![0u8];
        prefixed.extend_from_slice(&big);
        assert_eq!(leaf_hash(&big), sha256(&prefixed));
    }

    #[test]
    fn rfc6962_roots() {
        let leaves = rfc_leaf_hashes();
        assert_eq!(root(&[]), empty_root());
        for size in 1..=8 {
            assert_eq!(root(&leaves[..size]), rfc_root(size), "size {size}");
        }
    }

    #[test]
    fn rfc6962_inclusion_vectors() {
        let leaves = rfc_leaf_hashes();
        let vectors: [(u64, usize, Vec<Hash>); 5] = [
            (0, 1, vec![]),
            (
                0,
                8,
                hexes(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                5,
                8,
                hexes(&[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
            (
                2,
                3,
                hexes(&["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            ),
            (
                1,
                5,
                hexes(&[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ]),
            ),
        ];
        for (index, size, want) in vectors {
            let got = inclusion_proof(&leaves[..size], index).expect("proof");
            assert_eq!(got, want, "index {index} size {size}");
            verify_inclusion(
                &leaves[index as usize],
                index,
                size as u64,
                &want,
                &rfc_root(size),
            )
            .expect("published proof verifies");
        }
    }

    #[test]
    fn rfc6962_consistency_vectors() {
        let leaves = rfc_leaf_hashes();
        let vectors: [(usize, usize, Vec<Hash>); 5] = [
            (1, 1, vec![]),
            (
                1,
                8,
                hexes(&[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ]),
            ),
            (
                6,
                8,
                hexes(&[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
            (
                2,
                5,
                hexes(&[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ]),
            ),
            (
                6,
                7,
                hexes(&[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ]),
            ),
        ];
        for (old, new, want) in vectors {
            let got = consistency_proof(&leaves[..new], old as u64).expect("proof");
            assert_eq!(got, want, "{old} -> {new}");
            let (r1, r2) = (rfc_root(old), rfc_root(new));
            verify_consistency(old as u64, new as u64, &r1, &r2, &want)
                .expect("published proof verifies");
        }
    }

    #[test]
    fn accumulator_matches_root_for_every_size() {
        let leaves = test_leaves(300);
        let mut acc = Accumulator::new();
        assert_eq!(acc.root(), empty_root());
        for (i, leaf) in leaves.iter().enumerate() {
            acc.push(*leaf);
            assert_eq!(acc.size(), i as u64 + 1);
            assert_eq!(acc.root(), root(&leaves[..=i]), "size {}", i + 1);
        }
        let mut rfc = Accumulator::default();
        for (size, leaf) in rfc_leaf_hashes().into_iter().enumerate() {
            rfc.push(leaf);
            assert_eq!(rfc.root(), rfc_root(size + 1));
        }
    }

    fn flip_bit(hash: &mut Hash, which: usize) {
        hash[(which * 7) % 32] ^= 1 << (which % 8);
    }

    #[test]
    fn inclusion_proofs_verify_and_corruptions_fail() {
        let all = test_leaves(64);
        let wrong_leaf = leaf_hash(b"WrongLeaf");
        let other_root = hex("abacaba000000000000000000000000000000000000000000060061e00123456");
        for n in 1..=64usize {
            let leaves = &all[..n];
            let r = root(leaves);
            let size = n as u64;
            assert_eq!(
                inclusion_proof(leaves, size),
                Err(ProofError::IndexOutOfRange { index: size, size })
            );
            for (i, leaf) in leaves.iter().enumerate() {
                let idx = i as u64;
                let proof = inclusion_proof(leaves, idx).expect("proof");
                verify_inclusion(leaf, idx, size, &proof, &r).expect("valid proof");
                let fails = |leaf: &Hash, idx: u64, size: u64, proof: &[Hash], root: &Hash| {
                    assert!(
                        verify_inclusion(leaf, idx, size, proof, root).is_err(),
                        "corruption verified: leaf {i} of {n}"
                    );
                };
                // Wrong index, wrong size.
                if idx > 0 {
                    fails(leaf, idx - 1, size, &proof, &r);
                }
                fails(leaf, idx + 1, size, &proof, &r);
                fails(leaf, idx ^ 2, size, &proof, &r);
                fails(leaf, idx, size * 2, &proof, &r);
                fails(leaf, idx, size / 2, &proof, &r);
                // Wrong leaf, wrong root: each a plain root mismatch.
                for (l, rt) in [
                    (&wrong_leaf, &r),
                    (leaf, &empty_root()),
                    (leaf, &other_root),
                ] {
                    assert_eq!(
                        verify_inclusion(l, idx, size, &proof, rt),
                        Err(ProofError::RootMismatch)
                    );
                }
                // One flipped bit in any element.
                for k in 0..proof.len() {
                    for which in [k, k + 11, 255] {
                        let mut bad = proof.clone();
                        flip_bit(&mut bad[k], which);
                        fails(leaf, idx, size, &bad, &r);
                    }
                }
                // An extra element, at either end.
                let mut longer = proof.clone();
                longer.push(r);
                assert_eq!(
                    verify_inclusion(leaf, idx, size, &longer, &r),
                    Err(ProofError::PathTooLong)
                );
                longer.rotate_right(1);
                fails(leaf, idx, size, &longer, &r);
                // A missing element, at either end.
                if let Some((_, tail)) = proof.split_last() {
                    assert_eq!(
                        verify_inclusion(leaf, idx, size, tail, &r),
                        Err(ProofError::PathTooShort)
                    );
                    fails(leaf, idx, size, &proof[1..], &r);
                }
            }
        }
    }

    #[test]
    fn inclusion_error_variants() {
        let leaf = leaf_hash(b"x");
        let e = verify_inclusion(&leaf, 0, 0, &[], &empty_root());
        assert_eq!(e, Err(ProofError::IndexOutOfRange { index: 0, size: 0 }));
        let e = verify_inclusion(&leaf, 3, 3, &[], &leaf);
        assert_eq!(e, Err(ProofError::IndexOutOfRange { index: 3, size: 3 }));
        assert_eq!(verify_inclusion(&leaf, 0, 1, &[], &leaf), Ok(()));
        assert_eq!(
            verify_inclusion(&leaf, 0, 1, &[leaf], &leaf),
            Err(ProofError::PathTooLong)
        );
        assert_eq!(
            verify_inclusion(&leaf, 0, 2, &[], &leaf),
            Err(ProofError::PathTooShort)
        );
        assert!(inclusion_proof(&[], 0).is_err());
    }

    #[test]
    fn consistency_proofs_verify_and_corruptions_fail() {
        let all = test_leaves(64);
        let roots: Vec<Hash> = (0..=64).map(|n| root(&all[..n])).collect();
        let junk = leaf_hash(b"WrongRoot");
        for n in 1..=64usize {
            for m in 0..=n {
                let proof = consistency_proof(&all[..n], m as u64).expect("proof");
                let (old, new) = (m as u64, n as u64);
                let (r1, r2) = (&roots[m], &roots[n]);
                verify_consistency(old, new, r1, r2, &proof).expect("valid proof");
                if m == 0 || m == n {
                    assert!(proof.is_empty());
                    continue;
                }
                let fails = |o: u64, nw: u64, a: &Hash, b: &Hash, p: &[Hash]| {
                    assert!(
                        verify_consistency(o, nw, a, b, p).is_err(),
                        "corruption verified: {m} -> {n}"
                    );
                };
                fails(old - 1, new, r1, r2, &proof);
                fails(old + 1, new, r1, r2, &proof);
                fails(old ^ 2, new, r1, r2, &proof);
                fails(old, new * 2, r1, r2, &proof);
                fails(old, new / 2, r1, r2, &proof);
                fails(old, new, &junk, r2, &proof);
                fails(old, new, r1, &junk, &proof);
                fails(old, new, r2, r1, &proof);
                assert_eq!(
                    verify_consistency(old, new, r1, r2, &[]),
                    Err(ProofError::PathTooShort)
                );
                for extra in [*r1, *r2, proof[0]] {
                    let mut longer = proof.clone();
                    longer.push(extra);
                    assert_eq!(
                        verify_consistency(old, new, r1, r2, &longer),
                        Err(ProofError::PathTooLong)
                    );
                    longer.rotate_right(1);
                    fails(old, new, r1, r2, &longer);
                }
                fails(old, new, r1, r2, &proof[..proof.len() - 1]);
                for k in 0..proof.len() {
                    let mut bad = proof.clone();
                    flip_bit(&mut bad[k], k + 4);
                    fails(old, new, r1, r2, &bad);
                }
            }
        }
    }

    #[test]
    fn consistency_edge_cases() {
        let leaves = test_leaves(3);
        let (e, r3) = (empty_root(), root(&leaves));
        assert_eq!(verify_consistency(0, 0, &e, &e, &[]), Ok(()));
        assert_eq!(verify_consistency(0, 3, &e, &r3, &[]), Ok(()));
        assert_eq!(
            verify_consistency(0, 3, &r3, &r3, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(verify_consistency(3, 3, &r3, &r3, &[]), Ok(()));
        assert_eq!(
            verify_consistency(3, 3, &r3, &e, &[]),
            Err(ProofError::RootMismatch)
        );
        assert_eq!(
            verify_consistency(3, 3, &r3, &r3, &[e]),
            Err(ProofError::PathTooLong)
        );
        assert_eq!(
            verify_consistency(3, 2, &r3, &r3, &[]),
            Err(ProofError::SizesOutOfOrder { old: 3, new: 2 })
        );
        assert!(consistency_proof(&leaves, 4).is_err());
    }

    /// Throughput check for the verifier's streaming use; run with
    /// `cargo test --release -- --ignored accumulator_throughput --nocapture`.
    #[test]
    #[ignore = "timing-sensitive; run in release mode on demand"]
    fn accumulator_throughput() {
        const N: u64 = 2_000_000;
        let start = std::time::Instant::now();
        let mut acc = Accumulator::new();
        for i in 0..N {
            let entry = sha256(&i.to_be_bytes());
            acc.push(leaf_hash(&entry));
        }
        let secs = start.elapsed().as_secs_f64();
        let rate = N as f64 / secs;
        println!(
            "{N} leaves in {secs:.2}s: {rate:.0} leaves/s, root {:x?}",
            acc.root()
        );
        assert!(rate >= 500_000.0, "only {rate:.0} leaves/s");
    }
}
