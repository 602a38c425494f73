# Both providers target the same project/region so beta-only resources (TPU)
# and GA resources land side by side.
provider "google" {
  project = var.project_id
  region  = var.region
  zone    = var.zone
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
  zone    = var.zone
}
