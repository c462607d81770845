# frozen_string_literal: true

module VagrantPlugins
  module Vessel
    module Errors
      # A vessel command failed: what ran and what vessel said.
      class CommandFailed < Vagrant::Errors::VagrantError
        def error_message
          "vessel #{@extra_data[:command]} failed (exit status #{@extra_data[:status]}):\n#{@extra_data[:stderr]}"
        end
      end

      # The box has no image vessel can import.
      class BadBox < Vagrant::Errors::VagrantError
        def error_message
          "the box #{@extra_data[:box]} is not a vessel box: #{@extra_data[:reason]}"
        end
      end

      # A command that needs a running machine.
      class NotRunning < Vagrant::Errors::VagrantError
        def error_message
          "the machine is not running (vagrant up first)"
        end
      end
    end
  end
end
