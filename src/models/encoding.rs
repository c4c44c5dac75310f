//! Conversion of an encoded model input into `tch` tensors; the layout itself (and its
//! version) is defined in `analysis::encoding`, which stays free of libtorch.

use tch::{Device, Kind, Tensor};

use crate::analysis::encoding::{EncodedInput, LayoutMismatch, check_layout};

/// The sections of one input as tensors shaped like the layout, on one device.
#[derive(Debug)]
pub struct InputTensors {
    /// Layout version of the data.
    pub version: u32,
    /// `(section name, tensor)` in layout order.
    pub sections: Vec<(&'static str, Tensor)>,
}

impl InputTensors {
    /// The tensor of section `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.sections
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| t)
    }
}

fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

/// Every section as a float tensor of its layout shape on `device`.
pub fn to_tensors(input: &EncodedInput, device: Device) -> InputTensors {
    let flat = Tensor::from_slice(&input.data);
    let sections = input
        .layout
        .sections
        .iter()
        .map(|s| {
            let t = flat
                .narrow(0, s.offset as i64, s.len() as i64)
                .view(dims(&s.shape).as_slice())
                .to_device(device);
            (s.name, t)
        })
        .collect();
    InputTensors {
        version: input.version,
        sections,
    }
}

/// The whole input as one flat `[len]` float tensor on `device`.
pub fn to_flat_tensor(input: &EncodedInput, device: Device) -> Tensor {
    Tensor::from_slice(&input.data).to_device(device)
}

/// Inputs stacked into a `[batch, len]` float tensor, after checking every input was encoded
/// with the layout the model was made for (`model_version`, stored in its checkpoint).
pub fn to_batch(
    inputs: &[EncodedInput],
    model_version: u32,
    device: Device,
) -> Result<Tensor, LayoutMismatch> {
    check_layout(model_version)?;
    for i in inputs {
        check_layout(i.version)?;
    }
    let len = inputs.first().map_or(0, |i| i.data.len());
    let flat: Vec<f32> = inputs.iter().flat_map(|i| i.data.iter().copied()).collect();
    Ok(Tensor::from_slice(&flat)
        .view([inputs.len() as i64, len as i64])
        .to_kind(Kind::Float)
        .to_device(device))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::encoding::{INPUT_LAYOUT_VERSION, layout};

    fn encoded() -> EncodedInput {
        let l = layout();
        EncodedInput {
            version: INPUT_LAYOUT_VERSION,
            data: (0..l.len).map(|i| i as f32 * 0.5).collect(),
            layout: l,
        }
    }

    #[test]
    fn sections_have_layout_shapes_and_values() {
        let enc = encoded();
        let t = to_tensors(&enc, Device::Cpu);
        assert_eq!(t.version, INPUT_LAYOUT_VERSION);
        for s in &layout().sections {
            let x = t.get(s.name).unwrap();
            assert_eq!(x.size(), dims(&s.shape), "{}", s.name);
            let back: Vec<f32> = Vec::try_from(x.flatten(0, -1)).unwrap();
            assert_eq!(back, enc.data[s.offset..s.offset + s.len()], "{}", s.name);
        }
        let ohlcv = t.get("ohlcv").unwrap();
        assert_eq!(ohlcv.double_value(&[0, 0, 1]), 0.5);
        assert_eq!(
            to_flat_tensor(&enc, Device::Cpu).size(),
            vec![layout().len as i64]
        );
    }

    #[test]
    fn batch_checks_versions() {
        let a = encoded();
        let b = to_batch(&[a.clone(), a.clone()], INPUT_LAYOUT_VERSION, Device::Cpu).unwrap();
        assert_eq!(b.size(), vec![2, layout().len as i64]);
        let e = to_batch(
            std::slice::from_ref(&a),
            INPUT_LAYOUT_VERSION + 3,
            Device::Cpu,
        )
        .unwrap_err();
        assert_eq!(e.found, INPUT_LAYOUT_VERSION + 3);
        let mut old = a;
        old.version = 0;
        assert!(to_batch(&[old], INPUT_LAYOUT_VERSION, Device::Cpu).is_err());
    }
}
