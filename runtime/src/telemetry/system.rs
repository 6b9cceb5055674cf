//! CPU, memory, disk and uptime figures for `/health/detailed`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::Serialize;
use sysinfo::{Disks, System};

/// Figures the platform cannot give are absent rather than failing the health report.
#[derive(Debug, Clone, Serialize)]
pub struct SystemFigures {
    /// Whole-machine CPU use since the previous reading, percent of all cores.
    pub cpu_percent: Option<f32>,
    pub cpus: Option<usize>,
    pub memory_total_bytes: Option<u64>,
    pub memory_used_bytes: Option<u64>,
    /// Free space on the file system holding the data folder.
    pub disk_free_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    pub system_uptime_seconds: Option<u64>,
}

/// Keeps the previous CPU reading: usage is a difference between two readings.
#[derive(Debug)]
pub struct SystemMonitor {
    system: Mutex<Option<System>>,
    data_dir: PathBuf,
}

impl SystemMonitor {
    pub fn new(data_dir: &Path) -> Self {
        let mut system = System::new().ok();
        if let Some(system) = &mut system {
            system.refresh_cpu_usage();
        }
        Self { system: Mutex::new(system), data_dir: data_dir.canonicalize().unwrap_or_else(|_| data_dir.to_owned()) }
    }

    pub fn figures(&self) -> SystemFigures {
        let mut guard = self.system.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let system = guard.as_mut();
        let system = system.map(|system| {
            system.refresh_cpu_usage();
            system.refresh_memory();
            &*system
        });
        let disks = Disks::new_with_refreshed_list().ok();
        // The disk whose mount point is the longest prefix of the data folder.
        let disk = disks.as_ref().and_then(|disks| {
            disks
                .iter()
                .filter(|disk| self.data_dir.starts_with(disk.mount_point()))
                .max_by_key(|disk| disk.mount_point().as_os_str().len())
        });
        SystemFigures {
            cpu_percent: system.map(System::global_cpu_usage),
            cpus: system.map(|system| system.cpus().len()),
            memory_total_bytes: system.map(System::total_memory),
            memory_used_bytes: system.map(System::used_memory),
            disk_free_bytes: disk.map(|disk| disk.available_space()),
            disk_total_bytes: disk.map(|disk| disk.total_space()),
            system_uptime_seconds: System::uptime().ok(),
        }
    }
}
