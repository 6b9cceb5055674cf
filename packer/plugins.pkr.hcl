# For current Packer (1.7 and later), where builders are plugins: `packer init packer/`
# installs these (or `packer plugins install github.com/hashicorp/amazon` and
# `packer plugins install github.com/hashicorp/qemu`). Kept out of forecourt.pkr.hcl
# because Debian's Packer 1.6.6, which CI validates with, rejects this block; it
# validates forecourt.pkr.hcl by name and so never reads this file.
packer {
  required_version = ">= 1.7.0"
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
    qemu = {
      source  = "github.com/hashicorp/qemu"
      version = ">= 1.1.0"
    }
  }
}
