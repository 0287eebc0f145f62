//! NVIDIA GPUs through NVML's total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`,
//! millijoules since the driver loaded; Volta and newer), with `libnvidia-ml.so.1` loaded at run
//! time: without the library (or without a GPU that supports the counter) there is simply no GPU
//! meter, and the binary does not link against NVIDIA's libraries.
//!
//! Not yet exercised on a GPU machine (none was lent to this project's sessions so far); the
//! symbols are the `_v2` ones the NVML header maps its names to.

use crate::{Provenance, SourceReading};
use std::ffi::{c_int, c_uint, c_ulonglong, c_void};

type Device = *mut c_void;
type InitFn = unsafe extern "C" fn() -> c_int;
type CountFn = unsafe extern "C" fn(*mut c_uint) -> c_int;
type HandleFn = unsafe extern "C" fn(c_uint, *mut Device) -> c_int;
type EnergyFn = unsafe extern "C" fn(Device, *mut c_ulonglong) -> c_int;

/// The GPUs whose energy counter was readable at the start, and their start readings (mJ).
pub struct Gpus {
    lib: *mut c_void,
    energy: EnergyFn,
    shutdown: InitFn,
    devices: Vec<(u32, Device, u64)>,
}

fn sym(lib: *mut c_void, name: &std::ffi::CStr) -> Option<*mut c_void> {
    // SAFETY: `lib` is a live handle from dlopen and `name` is NUL-terminated.
    let p = unsafe { libc::dlsym(lib, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

impl Gpus {
    /// Loads NVML and reads every GPU's counter; `None` when there is no library, no GPU or no
    /// counter.
    pub fn open() -> Option<Gpus> {
        // SAFETY: dlopen with a constant NUL-terminated name; a null return is handled.
        let lib = unsafe {
            libc::dlopen(
                c"libnvidia-ml.so.1".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            )
        };
        if lib.is_null() {
            return None;
        }
        let close = || {
            // SAFETY: `lib` came from dlopen above and is closed once.
            unsafe { libc::dlclose(lib) };
            None
        };
        let (Some(init), Some(count), Some(handle), Some(energy), Some(shutdown)) = (
            sym(lib, c"nvmlInit_v2"),
            sym(lib, c"nvmlDeviceGetCount_v2"),
            sym(lib, c"nvmlDeviceGetHandleByIndex_v2"),
            sym(lib, c"nvmlDeviceGetTotalEnergyConsumption"),
            sym(lib, c"nvmlShutdown"),
        ) else {
            return close();
        };
        // SAFETY: the symbols have the signatures of NVML's C API (nvml.h).
        unsafe {
            let init: InitFn = std::mem::transmute(init);
            let count: CountFn = std::mem::transmute(count);
            let handle: HandleFn = std::mem::transmute(handle);
            let energy: EnergyFn = std::mem::transmute(energy);
            let shutdown: InitFn = std::mem::transmute(shutdown);
            if init() != 0 {
                return close();
            }
            let mut n: c_uint = 0;
            let mut devices = Vec::new();
            if count(&mut n) == 0 {
                for i in 0..n {
                    let mut d: Device = std::ptr::null_mut();
                    let mut mj: c_ulonglong = 0;
                    if handle(i, &mut d) == 0 && energy(d, &mut mj) == 0 {
                        devices.push((i, d, mj));
                    }
                }
            }
            if devices.is_empty() {
                shutdown();
                return close();
            }
            Some(Gpus {
                lib,
                energy,
                shutdown,
                devices,
            })
        }
    }

    /// Each GPU's energy since [`Gpus::open`].
    pub fn readings(&mut self) -> Vec<SourceReading> {
        self.devices
            .iter()
            .filter_map(|&(i, d, start)| {
                let mut mj: c_ulonglong = 0;
                // SAFETY: `d` is a handle NVML gave for this initialised session.
                let ok = unsafe { (self.energy)(d, &mut mj) } == 0;
                ok.then(|| SourceReading {
                    source: format!("gpu-{i}"),
                    joules: mj.saturating_sub(start) as f64 * 1e-3,
                    provenance: Provenance::Measured {
                        counter: "NVML nvmlDeviceGetTotalEnergyConsumption".into(),
                    },
                    uncertainty: 0.05,
                })
            })
            .collect()
    }
}

impl Drop for Gpus {
    fn drop(&mut self) {
        // SAFETY: NVML was initialised by `open`; shut down and unloaded once.
        unsafe {
            (self.shutdown)();
            libc::dlclose(self.lib);
        }
    }
}
