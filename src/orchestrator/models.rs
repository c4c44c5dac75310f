//! The CNN and the DQN as experts of the mixture, over part-i's [`InferenceCore`]: one pass
//! runs the CNN and then the DQN on the CNN's hidden states of the same step; the CNN expert
//! answers with the CNN's output and leaves the DQN's for the DQN expert, which depends on the
//! CNN so it runs in the next stage of the step.
//!
//! **Validation.** Live inputs are validated before inference (`validate = true`, as the
//! runtime does). Inputs replayed from kline history have no order book, so they cannot pass
//! validation (no COB); with `validate = false` they are encoded as they are, parts missing
//! in the layout's documented absent form — exactly how training samples are built from the
//! same history (`models::samples`).
//!
//! **Earlier outputs.** With `see_last_predictions = false` the models get the input without
//! `last_predictions` (empty), so steps do not depend on each other and backtests may batch
//! them; with `true` they see them and steps run in time order.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tch::Tensor;

use super::expert::{Expert, ExpertError, Upstream};
use crate::analysis::encoding::{encode, encode_validated};
use crate::analysis::input::{BaseDataInput, InputConfig};
use crate::analysis::model_output::ModelOutput;
use crate::market::types::Symbol;
use crate::models::cnn::{CnnOutput, predictions};
use crate::models::input::{Anchor, ModelRows};
use crate::models::rl_train::{market_features, market_width};
use crate::models::runtime::InferenceCore;

/// The models and the DQN outputs waiting for their expert.
struct Shared {
    core: InferenceCore,
    validate: bool,
    input_cfg: InputConfig,
    see_last_predictions: bool,
    /// DQN outputs of the newest CNN pass, by (symbol, time).
    pending: BTreeMap<(Symbol, i64), Result<ModelOutput, ExpertError>>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    /// `[cnn, dqn]` outputs per input, in one batch.
    fn run(
        &self,
        inputs: &[&BaseDataInput],
    ) -> Vec<Result<(ModelOutput, ModelOutput), ExpertError>> {
        let cnn_cfg = self.core.cnn.net.config();
        let mut rows = ModelRows::new(cnn_cfg.input);
        let mut market = Vec::new();
        let mut answers = Vec::with_capacity(inputs.len());
        let mut valid = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            let stripped;
            let input: &BaseDataInput =
                if self.see_last_predictions || input.last_predictions.is_empty() {
                    input
                } else {
                    stripped = BaseDataInput {
                        last_predictions: BTreeMap::new(),
                        ..(*input).clone()
                    };
                    &stripped
                };
            let enc = if self.validate {
                encode_validated(input, &self.input_cfg)
                    .map_err(|e| ExpertError::InvalidInput(e.to_string()))
            } else {
                Ok(encode(input))
            };
            let pushed = enc.and_then(|enc| {
                rows.push(&enc)
                    .map_err(|e| ExpertError::InvalidInput(e.to_string()))?;
                Ok(enc)
            });
            match pushed {
                Ok(enc) => {
                    market.extend(market_features(
                        &enc,
                        self.core.spec.timeframe,
                        self.core.spec.recent,
                    ));
                    valid.push(i);
                    answers.push(Err(ExpertError::Model("not run".into())));
                }
                Err(e) => answers.push(Err(e)),
            }
        }
        if valid.is_empty() {
            return answers;
        }
        let device = self.core.cnn.vs.device();
        let out: CnnOutput = self.core.cnn.infer(&rows.all(device));
        let preds = predictions(&out);
        let n = valid.len() as i64;
        let mut parts = vec![
            Tensor::from_slice(&market)
                .view([n, market_width(self.core.spec.recent) as i64])
                .to_device(device),
        ];
        if self.core.spec.cnn_features > 0 {
            parts.push(out.state_features().to_device(device));
        }
        // The experts do not see the account: the DQN is asked as if flat, so decisions do not
        // depend on fills (and backtest batches equal single steps).
        parts.push(Tensor::zeros([n, 1], (tch::Kind::Float, device)));
        let decisions = self.core.dqn.decide_batch(&Tensor::cat(&parts, 1));
        for (k, &i) in valid.iter().enumerate() {
            let input = inputs[i];
            let cnn = preds[k].to_model_output(
                &self.core.names.0,
                &input.symbol,
                input.timestamp_ms,
                Anchor::of(input, cnn_cfg.timeframe).as_ref(),
                BTreeMap::new(),
            );
            let dqn = decisions[k].to_model_output(
                &self.core.names.1,
                &input.symbol,
                input.timestamp_ms,
                BTreeMap::new(),
            );
            answers[i] = Ok((cnn, dqn));
        }
        answers
    }

    fn infer_cnn(&mut self, inputs: &[&BaseDataInput]) -> Vec<Result<ModelOutput, ExpertError>> {
        let results = self.run(inputs);
        self.pending.clear();
        inputs
            .iter()
            .zip(results)
            .map(|(input, r)| {
                let key = (input.symbol.clone(), input.timestamp_ms);
                match r {
                    Ok((cnn, dqn)) => {
                        self.pending.insert(key, Ok(dqn));
                        Ok(cnn)
                    }
                    Err(e) => {
                        self.pending.insert(key, Err(e.clone()));
                        Err(e)
                    }
                }
            })
            .collect()
    }
}

/// The CNN as an expert (runs both models; see the module docs).
pub struct CnnExpert {
    name: String,
    shared: Arc<Mutex<Shared>>,
}

/// The DQN agent as an expert: the output computed on the CNN's same-step hidden states.
pub struct DqnExpert {
    name: String,
    cnn: String,
    shared: Arc<Mutex<Shared>>,
}

/// The two experts over one inference core.
pub fn model_experts(
    core: InferenceCore,
    input_cfg: InputConfig,
    validate: bool,
    see_last_predictions: bool,
) -> (CnnExpert, DqnExpert) {
    let (cnn, dqn) = core.names.clone();
    let shared = Arc::new(Mutex::new(Shared {
        core,
        validate,
        input_cfg,
        see_last_predictions,
        pending: BTreeMap::new(),
    }));
    (
        CnnExpert {
            name: cnn.clone(),
            shared: Arc::clone(&shared),
        },
        DqnExpert {
            name: dqn,
            cnn,
            shared,
        },
    )
}

impl Expert for CnnExpert {
    fn name(&self) -> &str {
        &self.name
    }

    fn uses_last_predictions(&self) -> bool {
        lock(&self.shared).see_last_predictions
    }

    fn infer(&mut self, input: &BaseDataInput, _: &Upstream) -> Result<ModelOutput, ExpertError> {
        lock(&self.shared)
            .infer_cnn(&[input])
            .pop()
            .unwrap_or_else(|| Err(ExpertError::Model("no answer".into())))
    }

    fn infer_batch(
        &mut self,
        steps: &[(&BaseDataInput, &Upstream)],
    ) -> Vec<Result<ModelOutput, ExpertError>> {
        let inputs: Vec<&BaseDataInput> = steps.iter().map(|(i, _)| *i).collect();
        lock(&self.shared).infer_cnn(&inputs)
    }
}

impl Expert for DqnExpert {
    fn name(&self) -> &str {
        &self.name
    }

    fn depends_on(&self) -> Vec<String> {
        vec![self.cnn.clone()]
    }

    fn uses_last_predictions(&self) -> bool {
        lock(&self.shared).see_last_predictions
    }

    fn infer(
        &mut self,
        input: &BaseDataInput,
        upstream: &Upstream,
    ) -> Result<ModelOutput, ExpertError> {
        if !upstream.contains_key(&self.cnn) {
            return Err(ExpertError::MissingUpstream {
                needs: self.cnn.clone(),
            });
        }
        lock(&self.shared)
            .pending
            .remove(&(input.symbol.clone(), input.timestamp_ms))
            .unwrap_or_else(|| {
                Err(ExpertError::MissingUpstream {
                    needs: self.cnn.clone(),
                })
            })
    }
}
