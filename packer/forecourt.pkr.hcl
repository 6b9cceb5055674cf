# The Forecourt appliance image: one provisioning (firmware-images/install.sh from the
# payload of firmware-images/payload.sh), two sources:
#   amazon-ebs.forecourt  an AMI from Debian's own Debian 12 AMI
#   qemu.forecourt        a local qcow2 from a base qcow2 (build-image.sh --packer-base)
#
#   make bundles && firmware-images/payload.sh          # target/image/payload.tar.gz
#   packer build -only=amazon-ebs.forecourt packer/forecourt.pkr.hcl
#   make image-packer                                   # the qemu source, end to end
#
# No `packer {}` block here: Debian's Packer 1.6.6 (what CI validates with) rejects
# required_plugins; current Packer reads them from plugins.pkr.hcl beside this file.
# See the README, "The appliance image".

variable "region" {
  type        = string
  default     = "eu-west-1"
  description = "AWS region to build the AMI in (and where it is registered)."
}

variable "instance_type" {
  type        = string
  default     = "t3.small"
  description = "Instance type of the temporary build instance (x86_64)."
}

variable "ami_name" {
  type        = string
  default     = "forecourt"
  description = "AMI name prefix; a UTC timestamp is appended (AMI names are unique)."
}

variable "tags" {
  type        = map(string)
  default     = { project = "forecourt" }
  description = "Tags for the AMI, its snapshot and the build instance."
}

variable "payload" {
  type        = string
  default     = ""
  description = "The payload tarball from firmware-images/payload.sh; default target/image/payload.tar.gz of this checkout."
}

variable "qemu_base_image" {
  type        = string
  default     = ""
  description = "Base qcow2 for the qemu source (firmware-images/build-image.sh --packer-base); default target/image/packer-base.qcow2."
}

variable "qemu_ssh_private_key_file" {
  type        = string
  default     = ""
  description = "Required by the qemu source: the SSH key the base qcow2 authorizes for root (build-image.sh --packer-base writes target/image/packer-base.key)."
}

variable "qemu_accelerator" {
  type        = string
  default     = "tcg"
  description = "QEMU accelerator: tcg (software, works anywhere) or kvm."
}

variable "qemu_output_directory" {
  type        = string
  default     = ""
  description = "Where the qemu source writes forecourt.qcow2 (must not exist yet); default target/image/packer-qemu."
}

locals {
  timestamp = formatdate("YYYYMMDDhhmmss", timestamp())
  ami_name  = "${var.ami_name}-${local.timestamp}"
  # Defaults relative to this checkout, whatever folder packer runs in.
  image_dir   = "${path.root}/../target/image"
  payload     = var.payload != "" ? var.payload : "${local.image_dir}/payload.tar.gz"
  base_image  = var.qemu_base_image != "" ? var.qemu_base_image : "${local.image_dir}/packer-base.qcow2"
  qemu_output = var.qemu_output_directory != "" ? var.qemu_output_directory : "${local.image_dir}/packer-qemu"
}

source "amazon-ebs" "forecourt" {
  region        = var.region
  instance_type = var.instance_type
  ami_name      = local.ami_name
  ssh_username  = "admin"

  # Debian's official Debian 12 AMIs (account 136693071363), newest first.
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      architecture        = "x86_64"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
    }
    owners      = ["136693071363"]
    most_recent = true
  }

  tags          = merge(var.tags, { Name = local.ami_name })
  snapshot_tags = var.tags
  run_tags      = var.tags
}

source "qemu" "forecourt" {
  iso_url              = local.base_image
  iso_checksum         = "none"
  disk_image           = true
  skip_resize_disk     = true
  format               = "qcow2"
  accelerator          = var.qemu_accelerator
  qemuargs             = [["-cpu", "max"]]
  memory               = 1536
  cpus                 = 2
  disk_interface       = "virtio"
  net_device           = "virtio-net"
  headless             = true
  output_directory     = local.qemu_output
  vm_name              = "forecourt.qcow2"
  ssh_username         = "root"
  ssh_private_key_file = var.qemu_ssh_private_key_file
  ssh_timeout          = "10m"
  shutdown_command     = "systemctl poweroff"
}

build {
  sources = ["source.amazon-ebs.forecourt", "source.qemu.forecourt"]

  # The same provisioning for both: upload the payload, run its install.sh on /.
  # The payload is made before the build (firmware-images/payload.sh), not by it;
  # `generated` only spares `packer validate` a checkout that has not built it.
  provisioner "file" {
    source      = local.payload
    destination = "/tmp/forecourt-payload.tar.gz"
    generated   = true
  }

  provisioner "shell" {
    execute_command = "chmod +x {{ .Path }}; if [ \"$(id -u)\" = 0 ]; then {{ .Vars }} {{ .Path }}; else sudo -n env {{ .Vars }} {{ .Path }}; fi"
    inline = [
      "set -eu",
      "rm -rf /tmp/forecourt-payload && mkdir /tmp/forecourt-payload",
      "tar -xzf /tmp/forecourt-payload.tar.gz -C /tmp/forecourt-payload",
      "/tmp/forecourt-payload/install.sh /",
      "rm -rf /tmp/forecourt-payload /tmp/forecourt-payload.tar.gz",
    ]
  }

  # The local image only: the build's SSH access goes (its key, the base's host keys, the
  # service), so no two machines share host keys and nobody logs in by the build key.
  provisioner "shell" {
    only = ["qemu.forecourt"]
    inline = [
      "rm -f /root/.ssh/authorized_keys /etc/ssh/ssh_host_*",
      "systemctl disable ssh.service",
    ]
  }
}
