//! What the launcher told this process: `mpirun` (Open MPI, MPICH's Hydra) and Slurm's
//! `srun` put the job's size and this process's rank in the environment before `main`.

/// How this process was started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// The launcher, for messages (`none` when started by hand).
    pub launcher: &'static str,
    /// Ranks in the job (1 when started by hand).
    pub size: usize,
    /// This process's rank.
    pub rank: usize,
    /// Ranks on this machine.
    pub local_size: usize,
    /// A launcher started us but did not say the size (PMIx under `srun`): ask MPI.
    pub forced: bool,
}

impl Launch {
    /// A process started by hand.
    pub const ALONE: Launch = Launch {
        launcher: "none",
        size: 1,
        rank: 0,
        local_size: 1,
        forced: false,
    };

    /// Reads the launcher's variables from the environment.
    pub fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`from_env`](Self::from_env) over any variable source (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let num = |k: &str| var(k).and_then(|v| v.trim().parse::<usize>().ok());
        // (launcher, size, rank, ranks on this node), most specific first. Slurm's
        // SLURM_NTASKS is also set inside a batch script, outside any `srun`: only a job
        // step's SLURM_STEP_NUM_TASKS means this process is one of several tasks.
        let known = [
            (
                "mpirun (Open MPI)",
                "OMPI_COMM_WORLD_SIZE",
                "OMPI_COMM_WORLD_RANK",
                "OMPI_COMM_WORLD_LOCAL_SIZE",
            ),
            ("mpirun (PMI)", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS"),
            (
                "srun",
                "SLURM_STEP_NUM_TASKS",
                "SLURM_PROCID",
                "SLURM_STEP_TASKS_PER_NODE",
            ),
        ];
        for (launcher, size, rank, local) in known {
            if let (Some(size), Some(rank)) = (num(size), num(rank)) {
                if size >= 1 && rank < size {
                    // SLURM_STEP_TASKS_PER_NODE may read "2(x4)": the leading count is ours
                    // on a homogeneous allocation.
                    let local_size = var(local)
                        .and_then(|v| {
                            let head: String = v.chars().take_while(char::is_ascii_digit).collect();
                            head.parse().ok()
                        })
                        .filter(|&n: &usize| n >= 1)
                        .unwrap_or(1);
                    return Launch {
                        launcher,
                        size,
                        rank,
                        local_size,
                        forced: false,
                    };
                }
            }
        }
        if let Some(rank) = num("PMIX_RANK") {
            return Launch {
                launcher: "a PMIx launcher",
                size: 1,
                rank,
                local_size: 1,
                forced: true,
            };
        }
        Self::ALONE
    }

    /// CPU threads for this rank when the user gave none: the machine's cores shared among
    /// its ranks, and no more than the cores the launcher bound this rank to (Open MPI binds
    /// each rank to a core for up to 2 ranks, to a socket beyond).
    pub fn default_threads(&self) -> Option<usize> {
        if self.local_size <= 1 {
            return None;
        }
        let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: sysconf only reads a system constant.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        let online = usize::try_from(online).unwrap_or(allowed).max(1);
        Some(allowed.min(online / self.local_size).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Launch {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| map.get(k).cloned())
    }

    #[test]
    fn reads_each_launcher() {
        assert_eq!(launch(&[]), Launch::ALONE);
        let l = launch(&[
            ("OMPI_COMM_WORLD_SIZE", "4"),
            ("OMPI_COMM_WORLD_RANK", "3"),
            ("OMPI_COMM_WORLD_LOCAL_SIZE", "2"),
        ]);
        assert_eq!((l.size, l.rank, l.local_size, l.forced), (4, 3, 2, false));
        let l = launch(&[("PMI_SIZE", "2"), ("PMI_RANK", "1")]);
        assert_eq!((l.size, l.rank, l.local_size), (2, 1, 1));
        let l = launch(&[
            ("SLURM_STEP_NUM_TASKS", "16"),
            ("SLURM_PROCID", "9"),
            ("SLURM_STEP_TASKS_PER_NODE", "8(x2)"),
        ]);
        assert_eq!(
            (l.launcher, l.size, l.rank, l.local_size),
            ("srun", 16, 9, 8)
        );
        assert!(launch(&[("PMIX_RANK", "0")]).forced);
    }

    #[test]
    fn a_batch_script_or_a_bad_rank_is_one_process() {
        // sbatch sets SLURM_NTASKS and SLURM_PROCID for the script itself.
        assert_eq!(
            launch(&[("SLURM_NTASKS", "8"), ("SLURM_PROCID", "0")]),
            Launch::ALONE
        );
        assert_eq!(
            launch(&[("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_RANK", "2")]),
            Launch::ALONE
        );
    }
}
