# frozen_string_literal: true

require "vagrant/action/builder"
require_relative "action/steps"
require_relative "errors"

module VagrantPlugins
  module Vessel
    # The action chains Vagrant runs for `up`, `halt`, `destroy`, `ssh`, `provision`, `reload`,
    # built from Vagrant's own middlewares (box handling, waiting for ssh, provisioners, synced
    # folders by rsync) and the vessel steps in action/steps.rb.
    module Action
      include Vagrant::Action::Builtin

      def self.up
        Vagrant::Action::Builder.new.tap do |b|
          b.use ConfigValidate
          b.use Call, IsState, :not_created do |env, b2|
            if env[:result]
              b2.use HandleBox
              b2.use Steps::Create
            end
          end
          b.use Call, IsState, :running do |env, b2|
            if env[:result]
              b2.use Steps::Say, "machine is already running"
              next
            end
            b2.use boot
          end
        end
      end

      # Start, then (after the start) wait for ssh, provision and sync folders.
      def self.boot
        Vagrant::Action::Builder.new.tap do |b|
          b.use Provision
          b.use SyncedFolderCleanup
          b.use SyncedFolders
          b.use Steps::Start
          b.use WaitForCommunicator, [:running]
        end
      end

      def self.halt
        Vagrant::Action::Builder.new.tap do |b|
          b.use ConfigValidate
          b.use Call, IsState, :running do |env, b2|
            if env[:result]
              b2.use Steps::Halt
            else
              b2.use Steps::Say, "machine is not running"
            end
          end
        end
      end

      def self.destroy
        created_only do |b2|
          b2.use Call, DestroyConfirm do |env2, b3|
            if env2[:result]
              b3.use ProvisionerCleanup, :before
              b3.use Steps::Destroy
              b3.use SyncedFolderCleanup
            else
              b3.use Steps::Say, "machine will not be destroyed"
            end
          end
        end
      end

      def self.reload
        created_only do |b2|
          b2.use halt
          b2.use boot
        end
      end

      def self.provision
        running_only { |b| b.use Provision }
      end

      def self.ssh
        running_only { |b| b.use SSHExec }
      end

      def self.ssh_run
        running_only { |b| b.use SSHRun }
      end

      # The steps in the block run for a created machine; others are told it is not.
      def self.created_only
        Vagrant::Action::Builder.new.tap do |b|
          b.use ConfigValidate
          b.use Call, IsState, :not_created do |env, b2|
            if env[:result]
              b2.use Steps::Say, "machine is not created"
              next
            end
            yield b2
          end
        end
      end

      def self.running_only
        Vagrant::Action::Builder.new.tap do |b|
          b.use ConfigValidate
          b.use Call, IsState, :running do |env, b2|
            raise Errors::NotRunning unless env[:result]

            yield b2
          end
        end
      end
    end
  end
end
