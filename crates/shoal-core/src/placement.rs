//! Replica placement: which chunk servers receive a new replica.
//!
//! Pure function over a snapshot of server loads. Rules, in order:
//! only alive servers; never two replicas on one server; never a server the
//! caller excludes (already a replica, or just failed); most free space first,
//! where free space is compared in bands about 10% wide (so servers sharing a
//! disk, or nearly equal ones, count as equal), then fewer chunks, then by id
//! so the choice is deterministic.

/// What placement knows of one chunk server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: u64,
    pub alive: bool,
    pub free_bytes: u64,
    pub chunk_count: u64,
}

/// Not enough servers to place the requested replicas.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("need {needed} alive chunk servers, {alive} are alive")]
pub struct NotEnoughServers {
    pub needed: u32,
    pub alive: u32,
}

/// Chooses `count` distinct servers for new replicas, skipping `exclude`.
pub fn place(candidates: &[Candidate], count: u32, exclude: &[u64]) -> Result<Vec<u64>, NotEnoughServers> {
    let mut usable: Vec<&Candidate> = candidates.iter().filter(|c| c.alive && !exclude.contains(&c.id)).collect();
    usable.sort_by_key(|c| (std::cmp::Reverse(free_band(c.free_bytes)), c.chunk_count, c.id));
    if usable.len() < count as usize {
        let alive = candidates.iter().filter(|c| c.alive).count() as u32;
        return Err(NotEnoughServers {
            needed: count + exclude.len() as u32 - excluded_dead(candidates, exclude),
            alive,
        });
    }
    Ok(usable.into_iter().take(count as usize).map(|c| c.id).collect())
}

/// Free space on a logarithmic scale with bands about 10% wide.
fn free_band(free_bytes: u64) -> u32 {
    if free_bytes == 0 { 0 } else { 1 + ((free_bytes as f64).ln() / 1.1f64.ln()) as u32 }
}

/// Excluded servers that are not alive anyway: they do not raise the number needed.
fn excluded_dead(candidates: &[Candidate], exclude: &[u64]) -> u32 {
    exclude.iter().filter(|id| !candidates.iter().any(|c| c.id == **id && c.alive)).count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u64, alive: bool, free: u64) -> Candidate {
        Candidate { id, alive, free_bytes: free, chunk_count: 0 }
    }

    #[test]
    fn most_free_first_and_distinct() {
        let cs = [c(1, true, 1000), c(2, true, 3000), c(3, true, 2000)];
        assert_eq!(place(&cs, 2, &[]).unwrap(), vec![2, 3]);
        assert_eq!(place(&cs, 2, &[2]).unwrap(), vec![3, 1]);
    }

    #[test]
    fn near_equal_free_space_spreads_by_chunk_count() {
        let cs = [
            Candidate { id: 1, alive: true, free_bytes: 1000, chunk_count: 5 },
            Candidate { id: 2, alive: true, free_bytes: 1001, chunk_count: 9 },
            Candidate { id: 3, alive: true, free_bytes: 999, chunk_count: 1 },
        ];
        assert_eq!(place(&cs, 2, &[]).unwrap(), vec![3, 1]);
    }

    #[test]
    fn dead_servers_are_skipped() {
        let cs = [c(1, true, 1000), c(2, false, 3000), c(3, true, 2000)];
        assert_eq!(place(&cs, 2, &[]).unwrap(), vec![3, 1]);
        assert_eq!(place(&cs, 3, &[]).unwrap_err(), NotEnoughServers { needed: 3, alive: 2 });
    }

    #[test]
    fn excluded_alive_servers_raise_the_need() {
        let cs = [c(1, true, 10), c(2, true, 30)];
        // One replica is already on 2: a second needs a third alive server.
        assert_eq!(place(&cs, 2, &[2]).unwrap_err(), NotEnoughServers { needed: 3, alive: 2 });
    }
}
