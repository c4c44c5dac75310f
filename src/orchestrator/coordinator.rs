//! Runs the experts of one step in dependency stages: experts whose inputs are ready run in
//! parallel, each on its own worker thread, and a stage waits at most the deadline; a late or
//! failing expert is skipped and flagged, never waited for (a late one is not handed the next
//! step while it is still busy). Backtests use the inline mode: every expert in order, no
//! deadline, so the same input always gives the same outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::decision::SkippedExpert;
use super::expert::{Expert, ExpertError, Upstream};
use crate::analysis::input::BaseDataInput;
use crate::analysis::model_output::ModelOutput;

/// How experts are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Each expert on its own thread, a stage waiting at most this long (live).
    Threads {
        /// Per-stage deadline.
        deadline: Duration,
    },
    /// Every expert on the caller's thread, in order, without deadline (backtests).
    Inline,
}

/// Why a set of experts cannot be coordinated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoordinatorError {
    /// Two experts share a name.
    #[error("two experts are named {0:?}")]
    DuplicateName(String),
    /// A dependency names no expert.
    #[error("expert {expert:?} depends on unknown expert {needs:?}")]
    UnknownDependency {
        /// The dependent expert.
        expert: String,
        /// The missing name.
        needs: String,
    },
    /// Dependencies form a cycle.
    #[error("experts {0:?} depend on each other in a cycle")]
    Cycle(Vec<String>),
    /// A worker thread could not be started.
    #[error("cannot start a worker thread for {0:?}")]
    Spawn(String),
}

/// Everything one step produced.
#[derive(Debug, Clone, Default)]
pub struct StepOutputs {
    /// Outputs in expert registration order.
    pub outputs: Vec<ModelOutput>,
    /// Experts without output, with the reason.
    pub skipped: Vec<SkippedExpert>,
    /// Time each answering expert took (threads mode: until its answer arrived).
    pub latency: BTreeMap<String, Duration>,
}

struct Job {
    step: u64,
    input: Arc<BaseDataInput>,
    upstream: Arc<Upstream>,
}

type Answer = (u64, Result<ModelOutput, ExpertError>, Duration);

struct Worker {
    jobs: Option<Sender<Job>>,
    answers: Receiver<Answer>,
    busy_with: Option<u64>,
    handle: Option<JoinHandle<()>>,
}

enum Runner {
    Inline(Box<dyn Expert>),
    Thread(Worker),
}

struct Slot {
    name: String,
    deps: Vec<String>,
    uses_last_predictions: bool,
    runner: Runner,
}

/// Runs a fixed set of experts step by step.
pub struct Coordinator {
    slots: Vec<Slot>,
    stages: Vec<Vec<usize>>,
    mode: RunMode,
    step: u64,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("experts", &self.names())
            .field("stages", &self.stages)
            .field("mode", &self.mode)
            .finish()
    }
}

/// Dependency stages: stage 0 has no dependencies, stage k depends only on earlier stages.
fn stages(names: &[String], deps: &[Vec<String>]) -> Result<Vec<Vec<usize>>, CoordinatorError> {
    let index: BTreeMap<&str, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    for (i, ds) in deps.iter().enumerate() {
        for d in ds {
            if !index.contains_key(d.as_str()) {
                return Err(CoordinatorError::UnknownDependency {
                    expert: names[i].clone(),
                    needs: d.clone(),
                });
            }
        }
    }
    let mut level: Vec<Option<usize>> = vec![None; names.len()];
    let mut done = 0;
    while done < names.len() {
        let mut progressed = false;
        for i in 0..names.len() {
            if level[i].is_some() {
                continue;
            }
            let dep_levels: Option<Vec<usize>> =
                deps[i].iter().map(|d| level[index[d.as_str()]]).collect();
            if let Some(ls) = dep_levels {
                level[i] = Some(ls.iter().map(|l| l + 1).max().unwrap_or(0));
                done += 1;
                progressed = true;
            }
        }
        if !progressed {
            let cycle = (0..names.len())
                .filter(|&i| level[i].is_none())
                .map(|i| names[i].clone())
                .collect();
            return Err(CoordinatorError::Cycle(cycle));
        }
    }
    let depth = level.iter().flatten().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); depth];
    for (i, l) in level.iter().enumerate() {
        out[l.unwrap_or(0)].push(i);
    }
    Ok(out)
}

fn spawn_worker(name: &str, mut expert: Box<dyn Expert>) -> Result<Worker, CoordinatorError> {
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let (ans_tx, ans_rx) = mpsc::channel::<Answer>();
    let handle = std::thread::Builder::new()
        .name(format!("expert-{name}"))
        .spawn(move || {
            while let Ok(job) = jobs_rx.recv() {
                let started = Instant::now();
                let r = expert.infer(&job.input, &job.upstream);
                if ans_tx.send((job.step, r, started.elapsed())).is_err() {
                    break;
                }
            }
        })
        .map_err(|_| CoordinatorError::Spawn(name.to_string()))?;
    Ok(Worker {
        jobs: Some(jobs_tx),
        answers: ans_rx,
        busy_with: None,
        handle: Some(handle),
    })
}

impl Coordinator {
    /// Coordinates `experts` (names unique, dependencies acyclic) in `mode`.
    pub fn new(experts: Vec<Box<dyn Expert>>, mode: RunMode) -> Result<Self, CoordinatorError> {
        let names: Vec<String> = experts.iter().map(|e| e.name().to_string()).collect();
        let mut seen = BTreeSet::new();
        for n in &names {
            if !seen.insert(n) {
                return Err(CoordinatorError::DuplicateName(n.clone()));
            }
        }
        let deps: Vec<Vec<String>> = experts.iter().map(|e| e.depends_on()).collect();
        let stages = stages(&names, &deps)?;
        let mut slots = Vec::with_capacity(experts.len());
        for ((expert, name), deps) in experts.into_iter().zip(names).zip(deps) {
            let uses_last_predictions = expert.uses_last_predictions();
            let runner = match mode {
                RunMode::Inline => Runner::Inline(expert),
                RunMode::Threads { .. } => Runner::Thread(spawn_worker(&name, expert)?),
            };
            slots.push(Slot {
                name,
                deps,
                uses_last_predictions,
                runner,
            });
        }
        Ok(Self {
            slots,
            stages,
            mode,
            step: 0,
        })
    }

    /// Expert names in registration order.
    pub fn names(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// Expert indices per dependency stage.
    pub fn stages(&self) -> &[Vec<usize>] {
        &self.stages
    }

    /// True when some expert reads the previous steps' outputs from its input, so steps
    /// cannot be batched ahead of time.
    pub fn needs_sequential_steps(&self) -> bool {
        self.slots.iter().any(|s| s.uses_last_predictions)
    }

    /// Lets every inline expert compute ahead the account-independent part of `inputs`.
    pub fn prefetch(&mut self, inputs: &[&BaseDataInput]) {
        for slot in &mut self.slots {
            if let Runner::Inline(expert) = &mut slot.runner {
                expert.prefetch(inputs);
            }
        }
    }

    /// Tells every inline expert the account's position direction in `symbol`.
    pub fn observe_position(&mut self, symbol: &str, direction: i8) {
        for slot in &mut self.slots {
            if let Runner::Inline(expert) = &mut slot.runner {
                expert.observe_position(symbol, direction);
            }
        }
    }

    /// Runs one step on `input`.
    pub fn step(&mut self, input: Arc<BaseDataInput>) -> StepOutputs {
        self.step += 1;
        let step = self.step;
        let mut produced: Vec<Option<ModelOutput>> = vec![None; self.slots.len()];
        let mut skipped: Vec<(usize, ExpertError)> = Vec::new();
        let mut latency = BTreeMap::new();
        let mut upstream = Upstream::new();
        for stage in self.stages.clone() {
            let shared = Arc::new(upstream.clone());
            let mut waiting = Vec::new();
            for &i in &stage {
                let slot = &mut self.slots[i];
                if let Some(missing) = slot.deps.iter().find(|d| !upstream.contains_key(*d)) {
                    skipped.push((
                        i,
                        ExpertError::MissingUpstream {
                            needs: missing.clone(),
                        },
                    ));
                    continue;
                }
                match &mut slot.runner {
                    Runner::Inline(expert) => {
                        let started = Instant::now();
                        let r = expert.infer(&input, &shared);
                        latency.insert(slot.name.clone(), started.elapsed());
                        match r {
                            Ok(o) => produced[i] = Some(o),
                            Err(e) => skipped.push((i, e)),
                        }
                    }
                    Runner::Thread(w) => {
                        drain_stale(w);
                        if w.busy_with.is_some() {
                            skipped.push((i, ExpertError::Busy));
                            continue;
                        }
                        let job = Job {
                            step,
                            input: Arc::clone(&input),
                            upstream: Arc::clone(&shared),
                        };
                        match w.jobs.as_ref().map(|tx| tx.send(job)) {
                            Some(Ok(())) => {
                                w.busy_with = Some(step);
                                waiting.push(i);
                            }
                            _ => skipped.push((i, ExpertError::Crashed)),
                        }
                    }
                }
            }
            if let RunMode::Threads { deadline } = self.mode {
                let until = Instant::now() + deadline;
                for i in waiting {
                    let Runner::Thread(w) = &mut self.slots[i].runner else {
                        continue;
                    };
                    match wait_answer(w, step, until) {
                        Ok((r, took)) => {
                            latency.insert(self.slots[i].name.clone(), took);
                            match r {
                                Ok(o) => produced[i] = Some(o),
                                Err(e) => skipped.push((i, e)),
                            }
                        }
                        Err(e) => skipped.push((
                            i,
                            match e {
                                RecvTimeoutError::Timeout => ExpertError::Deadline {
                                    deadline_ms: deadline.as_millis() as u64,
                                },
                                RecvTimeoutError::Disconnected => ExpertError::Crashed,
                            },
                        )),
                    }
                }
            }
            for &i in &stage {
                if let Some(o) = &produced[i] {
                    if let Err(e) = o.validate() {
                        produced[i] = None;
                        skipped.push((i, ExpertError::InvalidOutput(e)));
                    } else {
                        upstream.insert(self.slots[i].name.clone(), o.clone());
                    }
                }
            }
        }
        skipped.sort_by_key(|(i, _)| *i);
        StepOutputs {
            outputs: produced.into_iter().flatten().collect(),
            skipped: skipped
                .into_iter()
                .map(|(i, e)| SkippedExpert {
                    model: self.slots[i].name.clone(),
                    reason: e.to_string(),
                })
                .collect(),
            latency,
        }
    }

    /// Runs many independent steps (inline mode): each stage's experts get every step at
    /// once through [`Expert::infer_batch`]. Gives what [`Self::step`] gives for each input
    /// when no expert reads previous outputs ([`Self::needs_sequential_steps`] is false).
    pub fn step_batch(&mut self, inputs: &[Arc<BaseDataInput>]) -> Vec<StepOutputs> {
        if !matches!(self.mode, RunMode::Inline) {
            return inputs.iter().map(|i| self.step(Arc::clone(i))).collect();
        }
        self.step += inputs.len() as u64;
        let n = inputs.len();
        let mut produced: Vec<Vec<Option<ModelOutput>>> = vec![vec![None; self.slots.len()]; n];
        let mut skipped: Vec<Vec<(usize, ExpertError)>> = vec![Vec::new(); n];
        let mut upstream: Vec<Upstream> = vec![Upstream::new(); n];
        for stage in self.stages.clone() {
            for &i in &stage {
                let slot = &mut self.slots[i];
                let Runner::Inline(expert) = &mut slot.runner else {
                    continue;
                };
                let mut ready = Vec::new();
                for k in 0..n {
                    match slot.deps.iter().find(|d| !upstream[k].contains_key(*d)) {
                        Some(missing) => skipped[k].push((
                            i,
                            ExpertError::MissingUpstream {
                                needs: missing.clone(),
                            },
                        )),
                        None => ready.push(k),
                    }
                }
                let batch: Vec<(&BaseDataInput, &Upstream)> = ready
                    .iter()
                    .map(|&k| (inputs[k].as_ref(), &upstream[k]))
                    .collect();
                let results = expert.infer_batch(&batch);
                for (&k, r) in ready.iter().zip(results) {
                    match r
                        .and_then(|o| o.validate().map(|_| o).map_err(ExpertError::InvalidOutput))
                    {
                        Ok(o) => produced[k][i] = Some(o),
                        Err(e) => skipped[k].push((i, e)),
                    }
                }
            }
            for k in 0..n {
                for &i in &stage {
                    if let Some(o) = &produced[k][i] {
                        upstream[k].insert(self.slots[i].name.clone(), o.clone());
                    }
                }
            }
        }
        produced
            .into_iter()
            .zip(skipped)
            .map(|(p, mut s)| {
                s.sort_by_key(|(i, _)| *i);
                StepOutputs {
                    outputs: p.into_iter().flatten().collect(),
                    skipped: s
                        .into_iter()
                        .map(|(i, e)| SkippedExpert {
                            model: self.slots[i].name.clone(),
                            reason: e.to_string(),
                        })
                        .collect(),
                    latency: BTreeMap::new(),
                }
            })
            .collect()
    }
}

/// Discards answers to earlier steps so a late expert becomes free again.
fn drain_stale(w: &mut Worker) {
    loop {
        match w.answers.try_recv() {
            Ok((s, _, _)) => {
                if w.busy_with == Some(s) {
                    w.busy_with = None;
                }
            }
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => {
                w.busy_with = None;
                return;
            }
        }
    }
}

fn wait_answer(
    w: &mut Worker,
    step: u64,
    until: Instant,
) -> Result<(Result<ModelOutput, ExpertError>, Duration), RecvTimeoutError> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let (s, r, took) = w.answers.recv_timeout(left)?;
        if w.busy_with == Some(s) {
            w.busy_with = None;
        }
        if s == step {
            return Ok((r, took));
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        for slot in &mut self.slots {
            if let Runner::Thread(w) = &mut slot.runner {
                // Closing the job channel ends the worker after its current job; a worker
                // stuck in a slow model is detached rather than waited for.
                w.jobs = None;
                if let Some(h) = w.handle.take()
                    && h.is_finished()
                {
                    let _ = h.join();
                }
            }
        }
    }
}
