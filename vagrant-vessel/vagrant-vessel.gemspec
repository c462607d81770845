# frozen_string_literal: true

Gem::Specification.new do |s|
  s.name = "vagrant-vessel"
  s.version = "0.1.0"
  s.summary = "A Vagrant provider that runs machines as vessel VMs (KVM)"
  s.description = "Runs Vagrant machines with vessel: boxes are vessel images, machines are vessel VMs made from them, ssh goes through vessel's forwarded port and key."
  s.authors = ["vessel developers"]
  s.license = "Apache-2.0"
  s.files = Dir["lib/**/*.rb"] + ["README.md"]
  s.require_paths = ["lib"]
  s.required_ruby_version = ">= 2.7"
end
