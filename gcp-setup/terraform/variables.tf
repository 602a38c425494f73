# Inputs. One tfvars file per environment lives in gcp-setup/configs/.
# Validations catch the costly mistakes (a topology that does not match the
# accelerator type, a zone outside the region) before anything is created.

variable "project_id" {
  type        = string
  description = "Google Cloud project id that holds everything this environment creates."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid project id: 6-30 lowercase letters, digits or hyphens."
  }
}

variable "environment" {
  type        = string
  description = "Environment name (dev, v5p-128, ...); also the Terraform workspace and part of every resource name."
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment must be 2-16 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "name_prefix" {
  type        = string
  description = "Prefix of every resource name: <name_prefix>-<environment>."
  default     = "eva"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{1,9}$", var.name_prefix))
    error_message = "name_prefix must be 2-10 lowercase letters or digits, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "Region of the network, bucket and GKE cluster, e.g. us-east5."
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must look like us-east5."
  }
}

variable "zone" {
  type        = string
  description = "Zone of the accelerators and the dev instance; must be in region and offer the accelerator."
  validation {
    condition     = startswith(var.zone, "${var.region}-") && can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", var.zone))
    error_message = "zone must be a zone of var.region, e.g. us-east5-a."
  }
}

variable "labels" {
  type        = map(string)
  description = "Extra labels for every resource that takes labels."
  default     = {}
}

variable "eva_repo_url" {
  type        = string
  description = "Git URL of the Eva repository that hosts install (https:// or git@)."
  validation {
    condition     = can(regex("^(https://|git@)", var.eva_repo_url))
    error_message = "eva_repo_url must start with https:// or git@."
  }
}

variable "eva_git_ref" {
  type        = string
  description = "Branch, tag or commit of Eva that the dev instance installs on first boot."
  default     = "main"
  validation {
    condition     = length(var.eva_git_ref) > 0 && !can(regex("[[:space:]']", var.eva_git_ref))
    error_message = "eva_git_ref must be non-empty, without spaces or quotes."
  }
}

variable "bucket_name" {
  type        = string
  description = "GCS bucket for checkpoints and data (globally unique)."
  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be 3-63 lowercase letters, digits, dots, underscores or hyphens."
  }
}

variable "create_bucket" {
  type        = bool
  description = "Create the bucket here (true) or use an existing one, e.g. another environment's (false)."
  default     = true
}

variable "bucket_location" {
  type        = string
  description = "Bucket location; null means var.region (keeps checkpoint traffic in-region and free)."
  default     = null
  validation {
    condition     = var.bucket_location == null || can(regex("^[a-zA-Z0-9-]+$", var.bucket_location))
    error_message = "bucket_location must be a GCS location such as us-east5 or US."
  }
}

variable "bucket_noncurrent_days" {
  type        = number
  description = "Days an overwritten or deleted object version is kept before lifecycle deletes it."
  default     = 30
  validation {
    condition     = var.bucket_noncurrent_days >= 1 && floor(var.bucket_noncurrent_days) == var.bucket_noncurrent_days
    error_message = "bucket_noncurrent_days must be a whole number >= 1."
  }
}

variable "bucket_force_destroy" {
  type        = bool
  description = "Let terraform destroy delete a bucket that still holds objects. Off so checkpoints survive a teardown."
  default     = false
}

variable "subnet_cidr" {
  type        = string
  description = "Primary range of the subnet (VMs, TPU workers, GKE nodes)."
  default     = "10.10.0.0/20"
  validation {
    condition     = can(cidrhost(var.subnet_cidr, 0))
    error_message = "subnet_cidr must be a CIDR range."
  }
}

variable "pods_cidr" {
  type        = string
  description = "Secondary range for GKE pods."
  default     = "10.16.0.0/14"
  validation {
    condition     = can(cidrhost(var.pods_cidr, 0))
    error_message = "pods_cidr must be a CIDR range."
  }
}

variable "services_cidr" {
  type        = string
  description = "Secondary range for GKE services."
  default     = "10.20.0.0/20"
  validation {
    condition     = can(cidrhost(var.services_cidr, 0))
    error_message = "services_cidr must be a CIDR range."
  }
}

variable "gke_master_cidr" {
  type        = string
  description = "/28 range for the private GKE control plane."
  default     = "172.16.0.0/28"
  validation {
    condition     = can(cidrhost(var.gke_master_cidr, 0)) && endswith(var.gke_master_cidr, "/28")
    error_message = "gke_master_cidr must be a /28 CIDR range."
  }
}

variable "network_mtu" {
  type        = number
  description = "VPC MTU; 8896 (jumbo frames) is what TPU multi-slice and GPU networking want."
  default     = 8896
  validation {
    condition     = contains([1460, 1500, 8896], var.network_mtu)
    error_message = "network_mtu must be 1460, 1500 or 8896."
  }
}

variable "dev_instance" {
  type = object({
    enabled               = optional(bool, false)
    machine_type          = optional(string, "n1-standard-4")
    preemptible           = optional(bool, true)
    user                  = optional(string, "eva")
    idle_shutdown_minutes = optional(number, 30)
    jupyter_port          = optional(number, 8888)
    disk_size_gb          = optional(number, 100)
    image                 = optional(string, "debian-cloud/debian-12")
  })
  description = "Development VM: machine type, preemptible (Spot), login user, idle auto-shutdown minutes, Jupyter port, disk and image."
  default     = {}
  validation {
    condition     = var.dev_instance.idle_shutdown_minutes >= 10 && var.dev_instance.idle_shutdown_minutes <= 1440
    error_message = "dev_instance.idle_shutdown_minutes must be between 10 and 1440."
  }
  validation {
    condition     = var.dev_instance.jupyter_port > 1024 && var.dev_instance.jupyter_port < 65536 && var.dev_instance.jupyter_port != 22
    error_message = "dev_instance.jupyter_port must be an unprivileged TCP port."
  }
  validation {
    condition     = can(regex("^[a-z_][a-z0-9_-]{0,31}$", var.dev_instance.user))
    error_message = "dev_instance.user must be a valid Linux user name."
  }
  validation {
    condition     = var.dev_instance.disk_size_gb >= 50
    error_message = "dev_instance.disk_size_gb must be at least 50 (conda env + JAX + checkout)."
  }
}

variable "tpu_slice" {
  type = object({
    name             = string
    generation       = string
    accelerator_type = string
    topology         = string
    provisioning     = optional(string, "spot")
    runtime_version  = optional(string)
  })
  description = "Cloud TPU VM slice via a queued resource: generation (v5p|v6e), accelerator_type (v5p-128 counts TensorCores = 2 per chip; v6e-256 counts chips), topology (v5p 3-D like 4x4x4, v6e 2-D like 16x16), provisioning (spot|reserved|on-demand), runtime_version (null = per-generation default). null = no slice."
  default     = null
  validation {
    condition     = var.tpu_slice == null || try(contains(["v5p", "v6e"], var.tpu_slice.generation), false)
    error_message = "tpu_slice.generation must be v5p or v6e."
  }
  validation {
    condition     = var.tpu_slice == null || try(contains(["spot", "reserved", "on-demand"], var.tpu_slice.provisioning), false)
    error_message = "tpu_slice.provisioning must be spot, reserved or on-demand."
  }
  validation {
    condition     = var.tpu_slice == null || try(can(regex("^[a-z][a-z0-9-]{0,30}$", var.tpu_slice.name)), false)
    error_message = "tpu_slice.name must be 1-31 lowercase letters, digits or hyphens."
  }
  validation {
    # v5p topologies are 3-D, v6e 2-D.
    condition = var.tpu_slice == null || try(
      can(regex(var.tpu_slice.generation == "v5p" ? "^[0-9]+x[0-9]+x[0-9]+$" : "^[0-9]+x[0-9]+$", var.tpu_slice.topology)),
    false)
    error_message = "tpu_slice.topology must be AxBxC for v5p or AxB for v6e."
  }
  validation {
    # accelerator_type must name the same slice as the topology:
    # v5p-N has N/2 chips, v6e-N has N chips.
    condition = var.tpu_slice == null || try(
      startswith(var.tpu_slice.accelerator_type, "${var.tpu_slice.generation}-") &&
      tonumber(split("-", var.tpu_slice.accelerator_type)[1]) == (var.tpu_slice.generation == "v5p" ? 2 : 1) * (
        tonumber(split("x", var.tpu_slice.topology)[0]) *
        tonumber(split("x", var.tpu_slice.topology)[1]) *
        try(tonumber(split("x", var.tpu_slice.topology)[2]), 1)
      ),
    false)
    error_message = "tpu_slice.accelerator_type does not match tpu_slice.topology (v5p-128 = 64 chips, e.g. 4x4x4; v6e-256 = 256 chips = 16x16)."
  }
}

variable "gke" {
  type = object({
    release_channel         = optional(string, "REGULAR")
    deletion_protection     = optional(bool, false)
    system_machine_type     = optional(string, "e2-standard-4")
    system_node_count       = optional(number, 1)
    jobset_version          = optional(string, "v0.8.2")
    namespace               = optional(string, "default")
    k8s_service_account     = optional(string, "eva-train")
    master_authorized_cidrs = optional(list(string), [])
    tpu_pools = optional(list(object({
      name         = string
      generation   = string
      topology     = string
      num_slices   = optional(number, 1)
      provisioning = optional(string, "spot")
      reservation  = optional(string)
    })), [])
    gpu_pool = optional(object({
      name             = optional(string, "h200")
      machine_type     = optional(string, "a3-ultragpu-8g")
      accelerator_type = optional(string, "nvidia-h200-141gb")
      gpus_per_node    = optional(number, 8)
      node_count       = number
      provisioning     = optional(string, "spot")
      reservation      = optional(string)
    }))
  })
  description = "GKE cluster with JobSet: tpu_pools (generation v5p|v6e, topology, num_slices node pools of one slice each, provisioning spot|reserved|on-demand, reservation name when reserved) and gpu_pool (a3-ultragpu-8g H200 nodes). null = no cluster."
  default     = null
  validation {
    condition     = var.gke == null || try(contains(["RAPID", "REGULAR", "STABLE"], var.gke.release_channel), false)
    error_message = "gke.release_channel must be RAPID, REGULAR or STABLE."
  }
  validation {
    condition     = var.gke == null || try(can(regex("^v[0-9]+\\.[0-9]+\\.[0-9]+$", var.gke.jobset_version)), false)
    error_message = "gke.jobset_version must look like v0.8.2."
  }
  validation {
    condition = var.gke == null || try(alltrue([
      for p in var.gke.tpu_pools : contains(["v5p", "v6e"], p.generation) &&
      can(regex(p.generation == "v5p" ? "^[0-9]+x[0-9]+x[0-9]+$" : "^[0-9]+x[0-9]+$", p.topology)) &&
      can(regex("^[a-z][a-z0-9-]{0,20}$", p.name)) && p.num_slices >= 1
    ]), false)
    error_message = "gke.tpu_pools: generation v5p (topology AxBxC) or v6e (topology AxB), a short lowercase name and num_slices >= 1."
  }
  validation {
    # Multi-host pools: 4 chips per host, so the chip count must divide by 4.
    condition = var.gke == null || try(alltrue([
      for p in var.gke.tpu_pools : (
        tonumber(split("x", p.topology)[0]) * tonumber(split("x", p.topology)[1]) * try(tonumber(split("x", p.topology)[2]), 1)
      ) % 4 == 0
    ]), false)
    error_message = "gke.tpu_pools: the topology must hold a multiple of 4 chips (4 per host)."
  }
  validation {
    condition = var.gke == null || try(alltrue(concat(
      [for p in var.gke.tpu_pools : contains(["spot", "reserved", "on-demand"], p.provisioning) && (p.provisioning != "reserved" || p.reservation != null)],
      [for p in var.gke.gpu_pool[*] : contains(["spot", "reserved", "on-demand"], p.provisioning) && (p.provisioning != "reserved" || p.reservation != null)],
    )), false)
    error_message = "gke pools: provisioning must be spot, reserved or on-demand; reserved needs a reservation name."
  }
  validation {
    condition     = var.gke == null || try(alltrue([for p in var.gke.gpu_pool[*] : p.node_count >= 1]), false)
    error_message = "gke.gpu_pool.node_count must be at least 1."
  }
}
