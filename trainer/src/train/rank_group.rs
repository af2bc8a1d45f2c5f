//! [`RankGroup`]: the ranks of one training run. Rank 0 runs on the calling thread (the training
//! loop logs, evaluates and checkpoints with its replica); ranks 1.. run on threads of their own,
//! each owning its device, replica and communicator, and wait for one job per optimizer step.
//!
//! Start-up is in two phases so that a rank whose device cannot be opened fails the start before
//! any rank blocks in NCCL's communicator set-up (which waits for all ranks): every rank opens its
//! device, then, once all did, every rank connects and builds its replica.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::Device;

use super::batch_share::share_batches;
use super::replica::{Replica, ReplicaInit};
use super::step::StepResult;
use crate::data::Batch;
use crate::parallel::{Comm, LocalComm, Placement};

/// How one rank opens its device and joins the group (moved into the rank's thread).
enum RankSetup {
    Local(LocalComm),
    #[cfg(feature = "nccl")]
    Nccl {
        ordinal: usize,
        rank: usize,
        world: usize,
        id: crate::parallel::nccl::NcclId,
    },
}

impl RankSetup {
    fn device(&self) -> Result<Device> {
        match self {
            RankSetup::Local(_) => Ok(Device::Cpu),
            #[cfg(feature = "nccl")]
            RankSetup::Nccl { ordinal, .. } => crate::device::cuda_rank_device(*ordinal),
        }
    }

    fn connect(self, _device: &Device) -> Result<Box<dyn Comm>> {
        match self {
            RankSetup::Local(comm) => Ok(Box::new(comm)),
            #[cfg(feature = "nccl")]
            RankSetup::Nccl { rank, world, id, .. } => {
                Ok(Box::new(crate::parallel::nccl::NcclComm::connect(rank, world, id, _device)?))
            }
        }
    }
}

/// Work for a rank thread.
enum Job {
    /// Every device opened: join the group and build the replica.
    Connect,
    Step {
        batches: Vec<Batch>,
        global_rows: usize,
        step: usize,
    },
}

/// What a rank thread answers to each phase / job.
enum Reply {
    Opened,
    Built,
    Stepped,
}

struct Worker {
    rank: usize,
    jobs: Option<Sender<Job>>,
    replies: Receiver<Result<Reply>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    fn send(&self, job: Job) -> Result<()> {
        let sent = self.jobs.as_ref().map(|j| j.send(job).is_ok()).unwrap_or(false);
        if !sent {
            bail!("rank {}: its thread has ended", self.rank);
        }
        Ok(())
    }

    fn recv(&self) -> Result<Reply> {
        match self.replies.recv() {
            Ok(reply) => reply.with_context(|| format!("rank {}", self.rank)),
            Err(_) => bail!("rank {}: its thread ended without answering (did it panic?)", self.rank),
        }
    }
}

/// The threads of ranks 1..; dropping them ends their loops, and waits for them unless a step
/// failed (a thread may then be stuck in a collective on its GPU: the process exits anyway).
struct Workers {
    list: Vec<Worker>,
    failed: bool,
}

impl Drop for Workers {
    fn drop(&mut self) {
        for w in &mut self.list {
            w.jobs = None; // the thread's loop ends
        }
        if self.failed {
            return;
        }
        for w in &mut self.list {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

pub struct RankGroup {
    leader: Replica,
    workers: Workers,
}

impl RankGroup {
    /// A single device, no other ranks and no communicator: today's single-device training.
    pub fn single(init: ReplicaInit, device: Device) -> Result<RankGroup> {
        let leader = Replica::build(&init, device, None)?;
        Ok(RankGroup { leader, workers: Workers { list: Vec::new(), failed: false } })
    }

    /// One rank per entry of `placement`; returns once every replica is built.
    pub fn start(init: ReplicaInit, placement: &Placement) -> Result<RankGroup> {
        let init = Arc::new(init);
        let mut setups = rank_setups(placement)?.into_iter();
        let leader_setup = setups.next().context("no ranks")?;
        let mut workers = Workers { list: Vec::new(), failed: true };
        for (i, setup) in setups.enumerate() {
            workers.list.push(spawn_rank(i + 1, setup, init.clone())?);
        }
        // Phase 1: every rank opens its device.
        let device = leader_setup.device().context("rank 0: opening the device")?;
        for w in &workers.list {
            expect(w.recv()?, "device", |r| matches!(r, Reply::Opened))?;
        }
        // Phase 2: all connect (NCCL's set-up waits for every rank) and build their replicas.
        for w in &workers.list {
            w.send(Job::Connect)?;
        }
        let comm = leader_setup.connect(&device).context("rank 0: joining the rank group")?;
        let leader = Replica::build(&init, device, Some(comm)).context("rank 0")?;
        for w in &workers.list {
            expect(w.recv()?, "replica", |r| matches!(r, Reply::Built))?;
        }
        workers.failed = false;
        Ok(RankGroup { leader, workers })
    }

    /// Number of ranks.
    pub fn world(&self) -> usize {
        self.workers.list.len() + 1
    }

    /// Rank 0's replica: what the loop evaluates and checkpoints (all replicas are identical).
    pub fn leader(&self) -> &Replica {
        &self.leader
    }

    /// One optimizer step on the global step's micro-batches `batches` (dealt round robin to the
    /// ranks); returns rank 0's result, whose loss, norm and row count are global. After an
    /// error the group must not be used again.
    pub fn step(&mut self, batches: Vec<Batch>, step: usize) -> Result<StepResult> {
        let global_rows = batches.iter().map(|b| b.micro_batch).sum();
        let mut shares = share_batches(batches, self.world()).into_iter();
        let mine = shares.next().unwrap_or_default();
        self.workers.failed = true;
        for (w, batches) in self.workers.list.iter().zip(shares) {
            w.send(Job::Step { batches, global_rows, step })?;
        }
        let result = self.leader.step(&mine, global_rows, step);
        if let Err(e) = &result {
            // Release ranks waiting for this one in a collective, and do not wait for them.
            self.leader.abort(&format!("{e:#}"));
        }
        let result = result?;
        // Rank 0 got through every collective, so every rank answers.
        for w in &self.workers.list {
            w.recv()?;
        }
        self.workers.failed = false;
        Ok(result)
    }
}

fn expect(reply: Reply, what: &str, ok: impl Fn(&Reply) -> bool) -> Result<()> {
    if ok(&reply) {
        Ok(())
    } else {
        Err(anyhow!("rank thread answered out of order while building its {what}"))
    }
}

fn rank_setups(placement: &Placement) -> Result<Vec<RankSetup>> {
    match placement {
        Placement::Cpu { world } => Ok(LocalComm::group(*world).into_iter().map(RankSetup::Local).collect()),
        #[cfg(feature = "nccl")]
        Placement::Cuda { ordinals } => {
            let (nvls, user) = crate::parallel::devices::nvls_default();
            tracing::info!(
                "NCCL_NVLS_ENABLE={nvls} ({})",
                if user { "set by the user" } else { "set by the trainer: NVLink multicast off" }
            );
            let id = crate::parallel::nccl::NcclId::new()?;
            let world = ordinals.len();
            Ok(ordinals
                .iter()
                .enumerate()
                .map(|(rank, &ordinal)| RankSetup::Nccl { ordinal, rank, world, id })
                .collect())
        }
        #[cfg(not(feature = "nccl"))]
        Placement::Cuda { ordinals } => {
            bail!("--devices with GPUs ({ordinals:?}) needs a trainer built with `--features nccl`")
        }
    }
}

/// Starts rank `rank`'s thread: open the device, wait for `Connect`, build, then one reply per job.
fn spawn_rank(rank: usize, setup: RankSetup, init: Arc<ReplicaInit>) -> Result<Worker> {
    let (jobs, job_rx) = channel::<Job>();
    let (reply_tx, replies) = channel::<Result<Reply>>();
    let handle = std::thread::Builder::new()
        .name(format!("rank-{rank}"))
        .spawn(move || {
            let device = match setup.device() {
                Ok(d) => d,
                Err(e) => return drop(reply_tx.send(Err(e.context("opening the device")))),
            };
            if reply_tx.send(Ok(Reply::Opened)).is_err() || !matches!(job_rx.recv(), Ok(Job::Connect)) {
                return;
            }
            let built = setup
                .connect(&device)
                .context("joining the rank group")
                .and_then(|comm| Replica::build(&init, device, Some(comm)));
            drop(init); // the host copies of the initial weights are freed once every rank has its own
            let mut replica = match built {
                Ok(r) => r,
                Err(e) => return drop(reply_tx.send(Err(e))),
            };
            if reply_tx.send(Ok(Reply::Built)).is_err() {
                return;
            }
            while let Ok(job) = job_rx.recv() {
                let Job::Step { batches, global_rows, step } = job else { continue };
                let result = replica.step(&batches, global_rows, step);
                if let Err(e) = &result {
                    replica.abort(&format!("{e:#}"));
                }
                if reply_tx.send(result.map(|_| Reply::Stepped)).is_err() {
                    return;
                }
            }
        })
        .with_context(|| format!("starting the thread of rank {rank}"))?;
    Ok(Worker { rank, jobs: Some(jobs), replies, handle: Some(handle) })
}
