//! The candle `CustomOp3` around a kernel's plain CPU loops, shared by the reference ops: the
//! three inputs' layout checks, the f32/f64 dispatch, and the backward's gradient check. An op
//! says only what its loops are ([`CpuLoops`]).

use crate::util::cpu_storage::{as_cpu, contiguous_slice};
use crate::util::real::Real;
use candle_core::{bail, CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

/// A kernel's CPU loops over three contiguous f32 or f64 inputs of fixed shapes.
pub(super) trait CpuLoops: Send + Sync {
    /// The op's name in errors.
    const NAME: &'static str;
    /// The inputs' names (in errors) and shapes.
    fn inputs(&self) -> [(&'static str, Shape); 3];
    fn output(&self) -> Shape;
    fn forward<T: Real>(&self, inputs: [&[T]; 3]) -> Vec<T>;
    /// The inputs' gradients, for the output's gradient `g`.
    fn backward<T: Real>(&self, inputs: [&[T]; 3], g: &[T]) -> [Vec<T>; 3];
}

/// The custom op running `L`'s loops; the inputs must already be contiguous and in f32 or f64.
pub(super) struct CpuOp<L>(pub L);

impl<L: CpuLoops> CpuOp<L> {
    fn check_layouts(&self, layouts: [&Layout; 3]) -> Result<()> {
        for (layout, (what, want)) in layouts.iter().zip(self.0.inputs()) {
            if layout.shape() != &want {
                bail!("{}: internal error: `{what}` is {:?}, expected {want:?}", L::NAME, layout.shape())
            }
        }
        Ok(())
    }

    fn slices<'a, T: Real>(&self, inputs: [(&'a CpuStorage, &Layout); 3]) -> Result<[&'a [T]; 3]> {
        let names = self.0.inputs().map(|(what, _)| what);
        let [(s1, l1), (s2, l2), (s3, l3)] = inputs;
        Ok([
            contiguous_slice::<T>(L::NAME, names[0], s1, l1)?,
            contiguous_slice::<T>(L::NAME, names[1], s2, l2)?,
            contiguous_slice::<T>(L::NAME, names[2], s3, l3)?,
        ])
    }

    fn fwd_typed<T: Real>(&self, inputs: [(&CpuStorage, &Layout); 3]) -> Result<(CpuStorage, Shape)> {
        let y = self.0.forward(self.slices::<T>(inputs)?);
        Ok((T::to_cpu_storage_owned(y), self.0.output()))
    }

    fn bwd_typed<T: Real>(
        &self,
        inputs: [(&CpuStorage, &Layout); 3],
        (sg, lg): (&CpuStorage, &Layout),
        device: &candle_core::Device,
    ) -> Result<[Tensor; 3]> {
        let g = contiguous_slice::<T>(L::NAME, "grad", sg, lg)?;
        let [da, db, dc] = self.0.backward(self.slices::<T>(inputs)?, g);
        let [sa, sb, sc] = self.0.inputs().map(|(_, shape)| shape);
        Ok([Tensor::from_vec(da, sa, device)?, Tensor::from_vec(db, sb, device)?, Tensor::from_vec(dc, sc, device)?])
    }
}

impl<L: CpuLoops> CustomOp3 for CpuOp<L> {
    fn name(&self) -> &'static str {
        L::NAME
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        self.check_layouts([l1, l2, l3])?;
        let inputs = [(s1, l1), (s2, l2), (s3, l3)];
        match s1 {
            CpuStorage::F32(_) => self.fwd_typed::<f32>(inputs),
            CpuStorage::F64(_) => self.fwd_typed::<f64>(inputs),
            _ => bail!("{}: internal error: cpu_fwd got a dtype other than f32/f64", L::NAME),
        }
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        _y: &Tensor,
        grad_y: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let want = self.0.output();
        let grad_y = grad_y.to_dtype(a.dtype())?.contiguous()?;
        if grad_y.shape() != &want {
            bail!("{}: gradient has shape {:?}, expected {want:?}", L::NAME, grad_y.dims())
        }
        let names = self.0.inputs().map(|(what, _)| what);
        let ((sa, la), (sb, lb), (sc, lc), (sg, lg)) =
            (a.storage_and_layout(), b.storage_and_layout(), c.storage_and_layout(), grad_y.storage_and_layout());
        self.check_layouts([la, lb, lc])?;
        let inputs = [
            (as_cpu(L::NAME, names[0], a, &sa)?, la),
            (as_cpu(L::NAME, names[1], b, &sb)?, lb),
            (as_cpu(L::NAME, names[2], c, &sc)?, lc),
        ];
        let g = (as_cpu(L::NAME, "grad", &grad_y, &sg)?, lg);
        let [da, db, dc] = match a.dtype() {
            DType::F32 => self.bwd_typed::<f32>(inputs, g, a.device())?,
            DType::F64 => self.bwd_typed::<f64>(inputs, g, a.device())?,
            other => bail!("{}: internal error: bwd got dtype {other:?}", L::NAME),
        };
        Ok((Some(da), Some(db), Some(dc)))
    }
}
