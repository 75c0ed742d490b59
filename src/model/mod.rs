//! Image classifiers: DenseNet and torchvision weight import.

pub(crate) mod config;
pub(crate) mod densenet;
pub mod import;
pub(crate) mod kernels;

pub use config::{Arch, ModelConfig, Precision};
pub use densenet::{DenseNet, DenseNetConfig};

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Tensor};

use crate::error::{Error, Result};

/// Loads a Burn record (`into_record().into_bytes()`) into `model`; `what` names the record's file in errors and
/// `expected` what it should have fitted.
pub fn load_record<M: Module>(model: M, bytes: Vec<u8>, what: &Path, expected: &str) -> Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| Error::format(what, format!("model record: {e:?}")))?;
    model
        .try_load_record(record)
        .map_err(|e| Error::format(what, format!("model record does not fit {expected}: {e:?}")))
}

struct Values {
    out: Vec<f32>,
    trainable_only: bool,
}

impl ModuleVisitor for Values {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.trainable_only && !param.is_require_grad() {
            return;
        }
        let v = param.val().into_data().convert::<f32>();
        self.out
            .extend(v.try_to_vec::<f32>().expect("f32 parameter"));
    }
}

/// Every float value of a module (parameters and BatchNorm statistics) in visiting order: what "same weights"
/// means when two runs or two ranks are compared.
pub fn state_values<M: Module>(module: &M) -> Vec<f32> {
    let mut v = Values {
        out: Vec::new(),
        trainable_only: false,
    };
    module.visit(&mut v);
    v.out
}

/// The values of the trainable parameters only (no BatchNorm statistics), in visiting order.
pub fn trainable_values<M: Module>(module: &M) -> Vec<f32> {
    let mut v = Values {
        out: Vec::new(),
        trainable_only: true,
    };
    module.visit(&mut v);
    v.out
}
