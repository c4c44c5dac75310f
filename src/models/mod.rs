//! Models in libtorch through `tch`: the pivot CNN, the DQN agent, their training,
//! checkpoints and live runtime, on the encoded `BaseDataInput` (see [`input`]).

pub mod checkpoint;
pub mod cnn;
pub mod cnn_train;
pub mod device;
pub mod dqn;
pub mod env;
pub mod input;
pub mod online;
pub mod online_rl;
pub mod replay;
pub mod rl_train;
pub mod runtime;
pub mod samples;
pub mod split;

pub mod encoding;

/// Runs one small tensor op on the best device, proving the libtorch wiring.
pub fn libtorch_smoke() -> (tch::Device, f64) {
    let device = tch::Device::cuda_if_available();
    let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).to_device(device);
    let sum = (&t * &t).sum(tch::Kind::Float).double_value(&[]);
    (device, sum)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tensor_op_runs_on_best_device() {
        let (_device, sum) = super::libtorch_smoke();
        assert_eq!(sum, 14.0);
    }
}
