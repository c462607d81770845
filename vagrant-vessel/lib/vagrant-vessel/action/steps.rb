# frozen_string_literal: true

require "securerandom"

module VagrantPlugins
  module Vessel
    module Action
      # The vessel-specific steps of the action chains.
      module Steps
        # Says one line about the machine.
        class Say
          def initialize(app, _env, text)
            @app = app
            @text = text
          end

          def call(env)
            env[:ui].info(@text)
            @app.call(env)
          end
        end

        # Imports the box's image into vessel's store (once) and creates the VM from it; the
        # VM's name becomes the machine id. Forwarded ports become vessel forwards; the ssh
        # port is vessel's own (chosen by vessel, on 127.0.0.1).
        class Create
          def initialize(app, _env)
            @app = app
          end

          def call(env)
            machine = env[:machine]
            driver = machine.provider.driver
            env[:ui].info("importing the box into vessel's image store (first use only)")
            image = driver.image_for(machine.box)
            name = vm_name(env)
            env[:ui].info("creating vessel VM #{name} from image #{image}")
            driver.create(name, image, forwards(machine))
            machine.id = name
            @app.call(env)
          end

          private

          def vm_name(env)
            project = File.basename(env[:root_path].to_s)
            base = "vagrant-#{project}-#{env[:machine].name}".gsub(/[^A-Za-z0-9_.-]/, "-")
            "#{base[0, 50]}-#{SecureRandom.hex(3)}"
          end

          def forwards(machine)
            machine.config.vm.networks.filter_map do |type, opts|
              next unless type == :forwarded_port
              next if opts[:id] == "ssh"

              proto = (opts[:protocol] || "tcp").to_s
              host_ip = opts[:host_ip] || "127.0.0.1"
              "#{proto}:#{host_ip}:#{opts[:host]}-:#{opts[:guest]}"
            end
          end
        end

        # `vessel start` (vessel's own [[provision]] entries are not run: Vagrant provisions).
        class Start
          def initialize(app, _env)
            @app = app
          end

          def call(env)
            env[:ui].info("starting vessel VM #{env[:machine].id}")
            env[:machine].provider.driver.start
            @app.call(env)
          end
        end

        # `vessel stop`: the guest is asked to power off, then the VM is powered off.
        class Halt
          def initialize(app, _env)
            @app = app
          end

          def call(env)
            env[:ui].info("stopping vessel VM #{env[:machine].id}")
            env[:machine].provider.driver.halt(force: env[:force_halt])
            @app.call(env)
          end
        end

        # `vessel rm` (after a forced stop): the VM and the disks vessel made for it.
        class Destroy
          def initialize(app, _env)
            @app = app
          end

          def call(env)
            env[:ui].info("removing vessel VM #{env[:machine].id}")
            env[:machine].provider.driver.destroy
            env[:machine].id = nil
            @app.call(env)
          end
        end
      end
    end
  end
end
