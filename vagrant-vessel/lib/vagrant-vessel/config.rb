# frozen_string_literal: true

module VagrantPlugins
  module Vessel
    # `config.vm.provider :vessel do |v| ... end`
    class Config < Vagrant.plugin("2", :config)
      # vCPUs (default 1).
      attr_accessor :cpus
      # Guest memory with its unit, e.g. "1G" (default "1G").
      attr_accessor :memory
      # Size of the VM's disk (the overlay of the box's image), e.g. "20G"; default: the image's.
      attr_accessor :disk_size
      # Words added to the image's kernel command line.
      attr_accessor :cmdline_append
      # The vessel binary (default: $VESSEL, else `vessel` on PATH).
      attr_accessor :vessel_path
      # vessel's state directory for these machines (default: vessel's own default).
      attr_accessor :state_dir

      def initialize
        @cpus = UNSET_VALUE
        @memory = UNSET_VALUE
        @disk_size = UNSET_VALUE
        @cmdline_append = UNSET_VALUE
        @vessel_path = UNSET_VALUE
        @state_dir = UNSET_VALUE
      end

      def finalize!
        @cpus = 1 if @cpus == UNSET_VALUE
        @memory = "1G" if @memory == UNSET_VALUE
        @disk_size = nil if @disk_size == UNSET_VALUE
        @cmdline_append = nil if @cmdline_append == UNSET_VALUE
        @vessel_path = ENV.fetch("VESSEL", "vessel") if @vessel_path == UNSET_VALUE
        @state_dir = ENV["VESSEL_STATE_DIR"] if @state_dir == UNSET_VALUE
      end

      def validate(_machine)
        errors = _detected_errors
        errors << "vessel: cpus must be a whole number from 1 (got #{@cpus.inspect})" unless @cpus.is_a?(Integer) && @cpus >= 1
        errors << "vessel: memory needs a unit, e.g. \"1G\" or \"512M\" (got #{@memory.inspect})" unless size?(@memory)
        errors << "vessel: disk_size needs a unit, e.g. \"20G\" (got #{@disk_size.inspect})" unless @disk_size.nil? || size?(@disk_size)
        { "vessel provider" => errors }
      end

      private

      def size?(value)
        value.is_a?(String) && value.match?(/\A\d+(\.\d+)?[KMGT]i?B?\z/i)
      end
    end
  end
end
