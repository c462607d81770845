# frozen_string_literal: true

require_relative "action"
require_relative "driver"

module VagrantPlugins
  module Vessel
    # The `vessel` provider: machine state and ssh info come from vessel.
    class Provider < Vagrant.plugin("2", :provider)
      def initialize(machine)
        super
        @machine = machine
      end

      def driver
        @driver ||= Driver.new(@machine)
      end

      def action(name)
        Action.respond_to?(name) ? Action.public_send(name) : nil
      end

      def ssh_info
        return nil unless driver.state == :running

        driver.ssh_info
      end

      def state
        id = driver.state
        short = { not_created: "not created", running: "running", poweroff: "poweroff", crashed: "crashed" }[id]
        long = {
          not_created: "The machine is not created. Run `vagrant up` to create it.",
          running: "The machine runs as vessel VM #{@machine.id}. `vagrant ssh` logs in.",
          poweroff: "The machine is stopped. `vagrant up` starts it.",
          crashed: "The VMM ended without the guest powering off; see `vessel inspect #{@machine.id}`."
        }[id]
        Vagrant::MachineState.new(id, short, long)
      end

      def to_s
        id = @machine.id ? @machine.id : "new VM"
        "vessel (#{id})"
      end
    end
  end
end
