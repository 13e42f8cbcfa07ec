//! Adapter and device set-up, error capture, and reading buffers back without blocking.

use std::sync::{Arc, Mutex};

use crate::GpuError;

/// Choices made when opening the device.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Use only the plainest paths: f32 everywhere, workgroup-memory reductions, even where the
    /// device offers `shader-f16` or `subgroups`.
    pub plain: bool,
    /// Cap on the bytes bound to one storage binding, below the device's own limit. Tensors
    /// larger than the cap are split by rows.
    pub max_binding: Option<u64>,
    /// Keep the KV cache in f16 where the device has `shader-f16`: half its memory and half
    /// what attention reads, for results within f16 rounding of the f32 path's.
    pub f16_kv: bool,
}

/// What the engine uses of the device's optional features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paths {
    pub shader_f16: bool,
    /// The KV cache is f16 (see [`GpuOptions::f16_kv`]).
    pub f16_kv: bool,
    /// Smallest subgroup size when the `subgroups` feature is in use.
    pub subgroup_size: Option<u32>,
    /// Most threads of a matrix kernel that share one row: 16 on a GPU; on a CPU device
    /// (lavapipe, SwiftShader), whose invocations are the SIMD lanes of a few cores, rows alone
    /// fill those and sums across threads cost more there than they save: 1 with subgroups of
    /// at least 8 (a subgroup's rows then share each input load, see matvec.wgsl), else 2.
    pub row_lanes: u32,
    /// Rows each thread of a matvec takes, every input value it reads serving all of them: 1 on
    /// a GPU, 4 on a CPU device without subgroups of 8, 1 on one with them (its subgroups share
    /// the input already; 4 rows per thread measured up to a third slower there, on F16 and
    /// Q8_0 heads, and no faster on the others).
    pub rows_per_thread: u32,
    /// Rows each thread of a prompt chunk's matmul takes: 1 on a GPU, 2 on a CPU device (where
    /// each input value read serving two rows halves what reads cost; more measured no faster).
    pub prompt_rows_per_thread: u32,
    /// Decode steps take Q4_K, Q5_K and Q6_K matrices by whole super-blocks
    /// (superblock.wgsl); otherwise by 32-value units, as the other formats (the kernel tests
    /// run both).
    pub super_blocks: bool,
}

/// An opened WebGPU device with the features and limits the engine asked for. Clones share
/// the device.
#[derive(Clone)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub paths: Paths,
    /// Bytes one storage binding may hold (a multiple of 256).
    pub max_binding: u64,
    /// The first uncaptured error or device loss, turned into an error on the next check.
    failure: Arc<Mutex<Option<Fault>>>,
}

/// A failure the device reported from outside any call of ours.
#[derive(Clone, Debug)]
enum Fault {
    Validation(String),
    OutOfMemory,
    Lost(String),
}

impl From<Fault> for GpuError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Validation(m) => GpuError::Validation(m),
            Fault::OutOfMemory => GpuError::OutOfMemory,
            Fault::Lost(m) => GpuError::DeviceLost(m),
        }
    }
}

impl Gpu {
    /// Opens the default adapter's device, asking for the largest storage bindings and buffers
    /// the adapter allows and for `shader-f16` and `subgroups` where offered.
    pub async fn new(options: &GpuOptions) -> Result<Self, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::NoAdapter(e.to_string()))?;
        Self::from_adapter(adapter, options).await
    }

    pub async fn from_adapter(
        adapter: wgpu::Adapter,
        options: &GpuOptions,
    ) -> Result<Self, GpuError> {
        let info = adapter.get_info();
        let offered = adapter.features();
        let mut features = wgpu::Features::empty();
        for f in [wgpu::Features::SHADER_F16, wgpu::Features::SUBGROUP] {
            if !options.plain && offered.contains(f) {
                features |= f;
            }
        }
        let have = adapter.limits();
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: have.max_storage_buffer_binding_size,
            max_buffer_size: have.max_buffer_size,
            ..wgpu::Limits::default()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("hearth"),
                required_features: features,
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::RequestDevice(e.to_string()))?;

        let failure = Arc::new(Mutex::new(None));
        let sink = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            let err = match e {
                wgpu::Error::OutOfMemory { .. } => Fault::OutOfMemory,
                other => Fault::Validation(other.to_string()),
            };
            sink.lock().unwrap().get_or_insert(err);
        }));
        let sink = failure.clone();
        device.set_device_lost_callback(move |reason, message| {
            sink.lock()
                .unwrap()
                .get_or_insert(Fault::Lost(format!("{reason:?}: {message}")));
        });

        let device_binding = limits
            .max_storage_buffer_binding_size
            .min(limits.max_buffer_size);
        let max_binding = options.max_binding.unwrap_or(u64::MAX).min(device_binding) / 256 * 256;
        let subgroup_size = features
            .contains(wgpu::Features::SUBGROUP)
            .then_some(info.subgroup_min_size)
            .filter(|s| s.is_power_of_two() && *s >= 4);
        let cpu = info.device_type == wgpu::DeviceType::Cpu;
        let (row_lanes, rows_per_thread) = match (cpu, subgroup_size) {
            (false, _) => (16, 1),
            (true, Some(8..)) => (1, 1),
            (true, _) => (2, 4),
        };
        Ok(Gpu {
            paths: Paths {
                shader_f16: features.contains(wgpu::Features::SHADER_F16),
                f16_kv: options.f16_kv && features.contains(wgpu::Features::SHADER_F16),
                subgroup_size,
                row_lanes,
                rows_per_thread,
                prompt_rows_per_thread: if cpu { 2 } else { 1 },
                super_blocks: true,
            },
            device,
            queue,
            info,
            max_binding: max_binding.max(256),
            failure,
        })
    }

    /// Whether the adapter computes on the CPU (lavapipe, SwiftShader, a browser's fallback
    /// adapter), where the CPU engine itself is faster.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// A one-line description of the adapter and the paths in use.
    pub fn describe(&self) -> String {
        let sub = self
            .paths
            .subgroup_size
            .map_or("no subgroups".to_string(), |s| format!("subgroups of {s}+"));
        // Browsers may keep the adapter's name to themselves (SwiftShader gives none).
        let name = [&self.info.name, &self.info.driver]
            .into_iter()
            .find(|n| !n.trim().is_empty())
            .map_or("unnamed adapter", |n| n.trim());
        format!(
            "{} ({:?}, {:?}; {}, {})",
            name,
            self.info.device_type,
            self.info.backend,
            match (self.paths.shader_f16, self.paths.f16_kv) {
                (true, true) => "f16 KV cache",
                (true, false) => "shader-f16 offered",
                _ => "no shader-f16",
            },
            sub
        )
    }

    /// The first error the device reported since it was opened, if any.
    pub fn check(&self) -> Result<(), GpuError> {
        match self.failure.lock().unwrap().as_ref() {
            Some(f) => Err(f.clone().into()),
            None => Ok(()),
        }
    }

    /// Runs `f` inside out-of-memory and validation error scopes and turns what they caught
    /// into an error.
    pub async fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        let memory = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let invalid = validation.pop().await;
        if memory.pop().await.is_some() {
            return Err(GpuError::OutOfMemory);
        }
        if let Some(e) = invalid {
            return Err(GpuError::Validation(e.to_string()));
        }
        self.check()?;
        Ok(out)
    }

    /// Waits until all submitted work has finished.
    pub async fn finish(&self) -> Result<(), GpuError> {
        let (tx, rx) = futures_channel::oneshot::channel();
        self.queue.on_submitted_work_done(move || {
            // The receiver only goes away when the caller gave up waiting.
            let _ = tx.send(());
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        rx.await
            .map_err(|_| GpuError::DeviceLost("the device dropped a completion callback".into()))?;
        self.check()
    }

    /// Copies the first `n` f32s of a storage buffer (COPY_SRC) back. A staging buffer is made
    /// per call: for tests and tools, not for the decode loop.
    pub async fn read_f32(&self, src: &wgpu::Buffer, n: usize) -> Result<Vec<f32>, GpuError> {
        let len = (n * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read_f32"),
            size: len.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(src, 0, &staging, 0, len);
        self.queue.submit([encoder.finish()]);
        self.read(&staging, len, |b| {
            bytemuck::cast_slice::<u8, f32>(b).to_vec()
        })
        .await
    }

    /// Waits for `buffer` (MAP_READ) to map, hands its first `len` bytes to `read`, and unmaps
    /// it. On the web the browser completes the map; natively the device is polled.
    pub async fn read<T>(
        &self,
        buffer: &wgpu::Buffer,
        len: u64,
        read: impl FnOnce(&[u8]) -> T,
    ) -> Result<T, GpuError> {
        let (tx, rx) = futures_channel::oneshot::channel();
        buffer.map_async(wgpu::MapMode::Read, ..len, move |r| {
            // The receiver only goes away when the caller gave up waiting.
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        let mapped = rx
            .await
            .map_err(|_| GpuError::DeviceLost("the map request was dropped".into()))?;
        self.check()?;
        mapped.map_err(|e| GpuError::Map(e.to_string()))?;
        let out = {
            let view = buffer
                .get_mapped_range(..len)
                .map_err(|e| GpuError::Map(e.to_string()))?;
            read(&view)
        };
        buffer.unmap();
        Ok(out)
    }
}
