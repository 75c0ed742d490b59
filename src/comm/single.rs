//! One process: every collective is the identity.

use super::Communicator;
use crate::error::{Error, Result};

/// The communicator of a single process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Single;

impl Communicator for Single {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn local_rank(&self) -> usize {
        0
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _buf: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root(root)
    }
    fn gather_bytes(&self, data: &[u8], root: usize) -> Result<Option<Vec<Vec<u8>>>> {
        check_root(root)?;
        Ok(Some(vec![data.to_vec()]))
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn split(&self, _color: usize) -> Result<Box<dyn Communicator>> {
        Ok(Box::new(Single))
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

fn check_root(root: usize) -> Result<()> {
    if root != 0 {
        return Err(Error::distributed(
            Some(0),
            "choosing a root",
            format!("root rank {root} in a world of 1"),
        ));
    }
    Ok(())
}
