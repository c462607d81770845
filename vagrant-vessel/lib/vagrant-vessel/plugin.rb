# frozen_string_literal: true

begin
  require "vagrant"
rescue LoadError
  raise "the vagrant-vessel plugin runs inside Vagrant"
end

module VagrantPlugins
  module Vessel
    # Registers the `vessel` provider, its configuration and its box format.
    class Plugin < Vagrant.plugin("2")
      name "vessel"
      description "Runs Vagrant machines as vessel VMs on KVM."

      config(:vessel, :provider) do
        require_relative "config"
        Config
      end

      provider(:vessel, box_format: "vessel", priority: 5) do
        require_relative "provider"
        Provider
      end
    end
  end
end
