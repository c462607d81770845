# frozen_string_literal: true

require "json"
require "vagrant/util/subprocess"
require_relative "errors"

module VagrantPlugins
  module Vessel
    # Runs vessel's CLI for one machine: every state and address comes from vessel itself
    # (`inspect --json`, `ssh-config --json`), nothing is cached here but the VM's name
    # (Vagrant's machine id).
    class Driver
      def initialize(machine)
        @machine = machine
      end

      def config
        @machine.provider_config
      end

      # Runs `vessel ARGS`; its stdout. Raises CommandFailed unless `allow_failure`, then
      # returns nil on failure.
      def vessel(*args, allow_failure: false)
        global = config.state_dir ? ["--state-dir", config.state_dir.to_s] : []
        r = Vagrant::Util::Subprocess.execute(config.vessel_path, *global, *args.map(&:to_s))
        return r.stdout if r.exit_code.zero?
        return nil if allow_failure

        raise Errors::CommandFailed, command: args.join(" "), status: r.exit_code, stderr: r.stderr.strip
      end

      # :not_created, :running, :poweroff or :crashed.
      def state
        return :not_created unless @machine.id

        out = vessel("inspect", @machine.id, "--json", allow_failure: true)
        return :not_created unless out

        case JSON.parse(out)["state"]
        when "running" then :running
        when "stopped" then :poweroff
        when "crashed" then :crashed
        else :not_created
        end
      end

      # Vagrant's ssh info once sshd answers (nil before: Vagrant keeps waiting).
      def ssh_info
        out = vessel("ssh-config", @machine.id, "--json", "--timeout", "0", allow_failure: true)
        return nil unless out

        c = JSON.parse(out)
        {
          host: c["host"],
          port: c["port"],
          username: c["user"],
          private_key_path: [c["identity_file"]]
        }
      end

      # The vessel image of the machine's box, imported into vessel's store on first use.
      def image_for(box)
        image = "vagrant-#{box.name}-#{box.version}".gsub(/[^A-Za-z0-9_.-]/, "-")
        images = JSON.parse(vessel("image", "ls", "--json"))
        return image if images.any? { |i| i["name"] == image }

        disk = box_disk(box)
        vessel("image", "import", disk, "--name", image)
        image
      end

      def create(name, image, forwards)
        args = ["create", name, "--image", image, "--cpus", config.cpus, "--memory", config.memory]
        args += ["--disk-size", config.disk_size] if config.disk_size
        args += ["--cmdline-append", config.cmdline_append] if config.cmdline_append
        forwards.each { |f| args += ["--forward", f] }
        vessel(*args)
      end

      def start
        vessel("start", @machine.id, "--no-provision")
      end

      def halt(force: false)
        args = ["stop", @machine.id]
        args << "--force" if force
        vessel(*args)
      end

      def destroy
        vessel("stop", @machine.id, "--force") if state == :running
        vessel("rm", @machine.id)
      end

      private

      # box.img (a vessel box or a Vagrant libvirt box's qcow2), checked against metadata.json.
      def box_disk(box)
        dir = box.directory
        meta = dir.join("metadata.json")
        raise Errors::BadBox, box: box.name, reason: "it has no metadata.json" unless meta.file?

        provider = JSON.parse(meta.read)["provider"]
        raise Errors::BadBox, box: box.name, reason: "its provider is #{provider.inspect}, not \"vessel\"" unless provider == "vessel"

        disk = dir.join("box.img")
        raise Errors::BadBox, box: box.name, reason: "it has no box.img" unless disk.file?

        disk.to_s
      end
    end
  end
end
